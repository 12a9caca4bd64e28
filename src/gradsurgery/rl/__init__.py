"""Multi-task reinforcement learning: multi-task SAC on Meta-World with any multi-task method.

The agent and its parts (importing this package needs only torch and numpy):

* :class:`SACConfig` — every setting, with the published MT-SAC defaults (Kurin et al.'s
  regularized unitary recipe is a preset-layer :class:`~gradsurgery.rl.presets.Recipe`,
  :func:`~gradsurgery.rl.presets.kurin_config`).
* :class:`MTSAC` — the agent: ``act(obs, task_ids)``, ``update(batch)``, ``state_dict()``. Each of
  its three losses is split per task and combined by a registered method through
  ``MultiTaskBackward.backward_partitioned`` (one vectorized backward pass for all tasks).
* :class:`MultiTaskReplay` / :class:`SACBatch` — per-task ring buffers, task-balanced batches.
* :class:`RewardNormalizer` — per-task reward std for normalization at sampling time.
* :mod:`gradsurgery.rl.networks` — the actor and the twin critic, built from any architecture of
  the registry :mod:`gradsurgery.rl.architectures` (:func:`architecture_names`): one-hot MLP,
  multi-head, soft modularization, CARE, FiLM. Importing this package registers them all.

Environments, presets, evaluation and the training loop live in :mod:`gradsurgery.rl.envs`,
:mod:`gradsurgery.rl.presets`, :mod:`gradsurgery.rl.evaluation` and :mod:`gradsurgery.rl.runner`
(they need Meta-World: ``pip install "gradsurgery[rl]"``).
"""

from gradsurgery.rl.architectures import (
    ArchitectureInfo,
    TaskNetwork,
    architecture_info,
    architecture_names,
    build_task_network,
    register_architecture,
)
from gradsurgery.rl.care import CARENetwork
from gradsurgery.rl.config import SACConfig
from gradsurgery.rl.film import FiLMNetwork
from gradsurgery.rl.networks import (
    Actor,
    MultiHeadMLP,
    OneHotMLP,
    TwinCritic,
    build_actor,
    build_critic,
)
from gradsurgery.rl.replay import MultiTaskReplay, SACBatch
from gradsurgery.rl.reward_normalization import RewardNormalizer
from gradsurgery.rl.sac import MTSAC, Temperature
from gradsurgery.rl.soft_modularization import SoftModularNetwork

__all__ = [
    "MTSAC",
    "Actor",
    "ArchitectureInfo",
    "CARENetwork",
    "FiLMNetwork",
    "MultiHeadMLP",
    "MultiTaskReplay",
    "OneHotMLP",
    "RewardNormalizer",
    "SACBatch",
    "SACConfig",
    "SoftModularNetwork",
    "TaskNetwork",
    "Temperature",
    "TwinCritic",
    "architecture_info",
    "architecture_names",
    "build_actor",
    "build_critic",
    "build_task_network",
    "register_architecture",
]
