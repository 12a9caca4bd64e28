"""MMoE: Multi-gate Mixture-of-Experts (Ma, Zhao, Yi, Chen, Hong & Chi, KDD 2018).

``k`` experts ``f_e`` (MLPs) are shared by all tasks; each task ``i`` has its own gating network
and tower (paper, eqs. 5–6):

    g_i(x) = softmax(W_gi x),    f^i(x) = Σ_e g_i(x)_e f_e(x),    y_i = h_i(f^i(x))

with ``W_gi ∈ R^{k×d}`` a linear map of the input (no bias in the paper's equation) and ``h_i`` the
task's tower (an MLP).

Which parameters are shared: the experts. The gates and towers are task ``i``'s. The stacked expert
outputs ``z = [f_1(x), ..., f_k(x)]`` (shape ``(n, k, expert_width)``) are a shared representation
in the MGDA-UB sense: every task reads the experts only through ``z`` (its gate reads the input
``x``, which no shared parameter produces), so ``forward(x, return_representation=True)`` returns
``(outputs, z)`` for ``MultiTaskBackward.backward(losses, representation=z)``.

Choices: sizes are configurable; the defaults (8 experts of one hidden layer of 64 with output 32,
towers with one hidden layer of 16) are small; every expert layer has a ReLU,
the last included. ``gate_bias=False`` as in the equation.

Example:
    >>> import torch
    >>> model = MMoE(10, [1, 1], num_experts=4)
    >>> outputs, z = model(torch.randn(5, 10), return_representation=True)
    >>> [y.shape for y in outputs], z.shape
    ([torch.Size([5, 1]), torch.Size([5, 1])], torch.Size([5, 4, 32]))
    >>> torch.allclose(model.gates(torch.randn(5, 10)).sum(-1), torch.ones(5, 2))
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from gradsurgery.models.base import MultiTaskModel, Owned
from gradsurgery.models.layers import mlp

__all__ = ["MMoE"]


class MMoE(MultiTaskModel):
    """Multi-gate Mixture-of-Experts for a shared input.

    Args:
        in_features: input width ``d``.
        out_features: each task's output width (its length is the number of tasks).
        num_experts: ``k``.
        expert_hidden: hidden widths of each expert MLP.
        expert_out: each expert's output width.
        tower_hidden: hidden widths of each task's tower.
        gate_bias: give the gating layers a bias (the paper's equation has none).
    """

    provides_representation = True

    def __init__(
        self,
        in_features: int,
        out_features: Sequence[int],
        *,
        num_experts: int = 8,
        expert_hidden: Sequence[int] = (64,),
        expert_out: int = 32,
        tower_hidden: Sequence[int] = (16,),
        gate_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_tasks = len(out_features)
        self.num_experts = num_experts
        self.experts = nn.ModuleList(
            mlp(in_features, [*expert_hidden, expert_out]) for _ in range(num_experts)
        )
        self.gate_layers = nn.ModuleList(
            nn.Linear(in_features, num_experts, bias=gate_bias) for _ in out_features
        )
        self.towers = nn.ModuleList(mlp(expert_out, tower_hidden, out) for out in out_features)

    def _shared_members(self) -> Iterable[Owned]:
        return [self.experts]

    def _task_members(self, task: int) -> Iterable[Owned]:
        return [self.gate_layers[task], self.towers[task]]

    def representation(self, x: Tensor) -> Tensor:
        """``(n, k, expert_out)``: every expert's output."""
        return torch.stack([expert(x) for expert in self.experts], dim=1)

    def gates(self, x: Tensor) -> Tensor:
        """``(n, m, k)``: each task's softmax gate over the experts."""
        return torch.stack([gate(x) for gate in self.gate_layers], dim=1).softmax(dim=-1)

    def task_outputs(self, z: Tensor, x: Tensor) -> list[Tensor]:
        """Each task's tower on its gated mixture of the expert outputs ``z``."""
        mixed = torch.einsum("nmk,nkd->nmd", self.gates(x), z)
        return [tower(mixed[:, i]) for i, tower in enumerate(self.towers)]

    def forward(
        self, x: Tensor, return_representation: bool = False
    ) -> list[Tensor] | tuple[list[Tensor], Tensor]:
        z = self.representation(x)
        outputs = self.task_outputs(z, x)
        return (outputs, z) if return_representation else outputs
