"""Multi-task architectures for supervised multi-task learning.

Plain ``nn.Module`` s that know nothing of data sets or methods. Every model subclasses
:class:`MultiTaskModel`: it has ``num_tasks``, and ``shared_parameters()`` /
``task_specific_parameters(task=None)`` partition its parameters (pass the former as
``MultiTaskBackward(model, method, shared=model.shared_parameters())``).

Shared-input models (``model(x) -> [y_1, ..., y_m]``):

* :class:`HardParameterSharing` (trunk + heads; ``return_representation=True`` gives ``z``), with
  :func:`hard_sharing_mlp`, :func:`multi_lenet` (Sener & Koltun's MultiMNIST LeNet),
  :func:`resnet_multitask` (3×32×32) and :func:`segnet_multitask` (dense: segmentation, depth,
  normals).
* :class:`CrossStitchNetwork` (Misra et al. 2016): :func:`cross_stitch_mlp`, :func:`cross_stitch_lenet`.
* :class:`MTANSegNet`, :class:`MTANClassifier` (Liu, Johns & Davison 2019).
* :class:`MMoE` (Ma et al. 2018; ``return_representation=True`` gives the expert outputs).

Task-conditioned models (``model(x, task_ids) -> y``, one output per sample, ``vmap``-safe):

* :class:`TaskConditionedNetwork` (one-hot task input, PCGrad §2.1).
* :class:`RoutingNetwork` (Rosenbaum et al. 2018), :func:`routing_cifar`; the router is trained by
  :meth:`RoutingNetwork.router_loss` (REINFORCE), separately from the task losses.

Building blocks (MLPs, vmap-safe one-hot task vectors, per-sample gathered heads) are public in
:mod:`gradsurgery.models.layers`; the RL networks of :mod:`gradsurgery.rl` use them too.
"""

from gradsurgery.models.base import MultiTaskModel
from gradsurgery.models.cross_stitch import (
    CrossStitchNetwork,
    CrossStitchUnit,
    cross_stitch_lenet,
    cross_stitch_mlp,
)
from gradsurgery.models.hard_sharing import HardParameterSharing, hard_sharing_mlp
from gradsurgery.models.lenet import lenet_head, lenet_trunk, multi_lenet
from gradsurgery.models.mmoe import MMoE
from gradsurgery.models.mtan import AttentionModule, MTANClassifier, MTANSegNet
from gradsurgery.models.resnet import SmallResNet, resnet_multitask
from gradsurgery.models.routing import RoutingNetwork, routing_cifar
from gradsurgery.models.segnet import (
    SEGNET_PAPER_CHANNELS,
    DenseHead,
    SegNet,
    dense_head,
    segnet_multitask,
)
from gradsurgery.models.task_conditioned import TaskConditionedNetwork

__all__ = [
    "SEGNET_PAPER_CHANNELS",
    "AttentionModule",
    "CrossStitchNetwork",
    "CrossStitchUnit",
    "DenseHead",
    "HardParameterSharing",
    "MMoE",
    "MTANClassifier",
    "MTANSegNet",
    "MultiTaskModel",
    "RoutingNetwork",
    "SegNet",
    "SmallResNet",
    "TaskConditionedNetwork",
    "cross_stitch_lenet",
    "cross_stitch_mlp",
    "dense_head",
    "hard_sharing_mlp",
    "lenet_head",
    "lenet_trunk",
    "multi_lenet",
    "resnet_multitask",
    "routing_cifar",
    "segnet_multitask",
]
