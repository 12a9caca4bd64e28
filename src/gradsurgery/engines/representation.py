"""Per-task gradients with respect to a shared representation: the cheap, *approximate* engine.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018 (MGDA-UB).
For a trunk ``z = f(x; θ_sh)`` and heads ``L_i(z)``, the gradient of task ``i`` on the trunk is
``∇_θsh L_i = (∂z/∂θ_sh)ᵀ u_i`` with ``u_i = ∂L_i/∂z``. Methods that weight tasks from a Gramian are
given ``U Uᵀ`` (the Gramian of the ``u_i``) instead of ``J Jᵀ``; the update is then one pass back
through the trunk with ``Σ_i w_i u_i``. Sener & Koltun bound MGDA on ``U`` as an upper bound; for
other methods it is a heuristic. Everything here is labelled ``approximate=True``.

One backward pass for all ``m`` tasks. When each task's part of the graph between its loss and
``z`` is its own (heads that read ``z`` and share nothing downstream of it: the usual trunk with
heads), one ``autograd.grad`` of ``Σ_i L_i`` through the heads gives every head its own gradient,
and a hook on each head's first node reads that head's gradient with respect to ``z`` before
autograd adds the heads' contributions up: ``u_i`` per task, in one pass. The graph is walked
once per step (in Python, over the heads' nodes only) to find each task's nodes and the edges by
which it reads ``z``. Each head parameter's gradient is kept once, with its owner task
(:class:`~gradsurgery.engines.per_task_gradients.OwnedGradients`), never as an ``m``-row block.
When the heads do share something downstream of ``z`` (a layer applied before splitting, a
parameter used by two heads) or reach the trunk other than through ``z``, the engine falls back
to one ``autograd.grad`` per task (the exact answer for this approximation, ``m`` passes
through the heads).

Cost: one pass through the heads (as ``loss.backward()`` makes), ``m`` hook calls, plus one
pass through the trunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, Node

from gradsurgery.engines.per_task_gradients import OwnedGradients, PerTaskGradients
from gradsurgery.engines.shared_input import SharedInputJacobian, stacked_loss_edges
from gradsurgery.jacobian import TaskJacobian

__all__ = ["RepresentationJacobian"]


class RepresentationJacobian:
    """Per-task gradients of the losses with respect to ``representation`` and the heads' params.

    Args:
        specific_params: the task-specific parameters (downstream of the representation).
        trunk: the parameters upstream of the representation that the combined signal is
            written back to (None: every leaf it reaches).
    """

    def __init__(
        self, specific_params: Sequence[Tensor], trunk: Sequence[Tensor] | None = None
    ) -> None:
        self.specific_params = list(specific_params)
        self.trunk = list(trunk) if trunk is not None else None

    def __call__(
        self,
        losses: Tensor | Sequence[Tensor],
        representation: Tensor,
        tasks: Tensor | None = None,
    ) -> PerTaskGradients:
        """Block 0 of the Jacobian is ``∂L_i/∂z``; the heads' gradients are ``owned`` (or, on
        the fallback, further blocks, one per task-specific parameter).

        The graph below the representation is kept, so that :meth:`backward_trunk` can pass the
        combined signal back.
        """
        if not representation.requires_grad:
            raise ValueError(
                "the representation does not require grad: it must be the trunk's output"
            )
        if isinstance(losses, Tensor):
            items: list[Tensor | GradientEdge | None] = list(stacked_loss_edges(losses) or [])
            values = losses.detach()
        else:
            scalars = [loss.reshape(()) for loss in losses]
            values = torch.stack([loss.detach() for loss in scalars])
            items = list(scalars)
        plan = _separate(items, representation, self.specific_params) if items else None
        if plan is None:
            inputs = [representation, *self.specific_params]
            grads = SharedInputJacobian(inputs)(losses, tasks, retain_graph=True)
        else:
            if tasks is None:
                tasks = torch.arange(len(items), device=values.device)
            grads = _one_pass(items, values, tasks, representation, self.specific_params, plan)
        return replace(
            grads,
            shared=[True] + [False] * (len(grads.jacobian.blocks) - 1),
            representation=representation,
            trunk=self.trunk,
        )

    @staticmethod
    def backward_trunk(
        representation: Tensor, signal: Tensor, shared_params: Sequence[Tensor] | None
    ) -> None:
        """Accumulate ``(∂z/∂θ_sh)ᵀ signal`` into the shared parameters' ``.grad``."""
        torch.autograd.backward(
            representation,
            grad_tensors=signal,
            inputs=list(shared_params) if shared_params else None,
        )


class _Plan:
    """Per task: the (node, input positions) by which it reads ``z``, and the head parameters
    (positions in the specific list) it reaches."""

    def __init__(self, m: int) -> None:
        self.reads: list[list[tuple[Node, list[int]]]] = [[] for _ in range(m)]
        self.params: list[list[int]] = [[] for _ in range(m)]
        self.alive: list[Node] = []  # keeps the walked nodes' Python objects (and ids) alive


def _separate(
    items: Sequence[Tensor | GradientEdge | None], z: Tensor, specific: Sequence[Tensor]
) -> _Plan | None:
    """Walk each task's graph down to ``z``; None when the tasks' graphs are not disjoint."""
    if z.grad_fn is None:
        return None
    walk = _Walk(z.grad_fn, z.output_nr, specific, len(items))
    for i, item in enumerate(items):
        if item is None:
            continue
        root = item.node if isinstance(item, GradientEdge) else item.grad_fn
        if root is None:
            if isinstance(item, Tensor) and item.requires_grad:  # a leaf loss: nothing to split
                return None
            continue
        if not walk.task(i, root):
            return None
    return walk.plan


class _Walk:
    """The walk of :func:`_separate`: each node is given to the first task that reaches it."""

    def __init__(self, z_node: Node, z_nr: int, specific: Sequence[Tensor], m: int) -> None:
        self.z_node, self.z_nr = z_node, z_nr
        self.position = {id(p): k for k, p in enumerate(specific)}
        self.plan = _Plan(m)
        self.owner: dict[int, int] = {}

    def task(self, i: int, root: Node) -> bool:
        """Walk task ``i``'s graph from ``root``; False when it is not the task's own."""
        stack: list[Node] = [root]
        while stack:
            node = stack.pop()
            if node is self.z_node:
                return False  # the loss is z itself
            seen = self.owner.get(id(node))
            if seen is not None:
                if seen != i:
                    return False  # a node two tasks share downstream of z
                continue
            self.owner[id(node)] = i
            self.plan.alive.append(node)
            if not self._visit(i, node, stack):
                return False
        return True

    def _visit(self, i: int, node: Node, stack: list[Node]) -> bool:
        """Record what ``node`` reads (a head parameter, or ``z``); push the rest."""
        leaf = getattr(node, "variable", None)
        if leaf is not None:  # AccumulateGrad: a leaf parameter
            k = self.position.get(id(leaf))
            if k is None:
                return False  # reaches a non-head parameter other than through z
            self.plan.params[i].append(k)
            return True
        positions = []
        for e, (nxt, nr) in enumerate(node.next_functions):
            if nxt is None:
                continue
            if nxt is self.z_node:
                if nr != self.z_nr:
                    return False  # another output of z's node: not through z
                positions.append(e)
            else:
                stack.append(nxt)
        if positions:
            self.plan.reads[i].append((node, positions))
        return True


def _one_pass(
    items: Sequence[Tensor | GradientEdge | None],
    values: Tensor,
    tasks: Tensor,
    z: Tensor,
    specific: Sequence[Tensor],
    plan: _Plan,
) -> PerTaskGradients:
    """One ``autograd.grad`` of ``Σ_i L_i`` through the heads, each ``u_i`` read by a hook."""
    m = len(plan.reads)
    captured: list[list[Tensor]] = [[] for _ in range(m)]

    def reader(i: int, positions: list[int]) -> Callable[[tuple[Tensor | None, ...], object], None]:
        def hook(grad_inputs: tuple[Tensor | None, ...], _outputs: object) -> None:
            captured[i].extend(g for e in positions if (g := grad_inputs[e]) is not None)

        return hook

    handles = [
        node.register_hook(reader(i, positions))
        for i, reads in enumerate(plan.reads)
        for node, positions in reads
    ]
    reached = sorted({k for ks in plan.params for k in ks})
    inputs = [z, *[specific[k] for k in reached]]
    outputs = [it for it in items if it is not None and _differentiable(it)]
    seed = torch.ones((), dtype=values.dtype, device=values.device)
    try:
        grads = torch.autograd.grad(
            outputs,  # type: ignore[arg-type]  # torch takes a mix of tensors and edges
            inputs,
            [seed] * len(outputs),
            retain_graph=True,
            allow_unused=True,
        )
    finally:
        for h in handles:
            h.remove()
    zero = torch.zeros_like(z)
    u = torch.stack([sum(c[1:], c[0]) if c else zero for c in captured])
    owner_of = {k: i for i, ks in enumerate(plan.params) for k in ks}
    kept = [(k, g) for k, g in zip(reached, grads[1:], strict=True) if g is not None]
    owned = OwnedGradients(
        [specific[k] for k, _ in kept], [g for _, g in kept], [owner_of[k] for k, _ in kept]
    )
    return PerTaskGradients(values, tasks, TaskJacobian([u]), owned, params=[z])


def _differentiable(item: Tensor | GradientEdge) -> bool:
    return isinstance(item, GradientEdge) or item.requires_grad
