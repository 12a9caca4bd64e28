"""Exact per-task gradients when every sample feeds every task's loss (a shared trunk with heads).

There is no cheaper exact way here: the task losses share the whole forward graph, and the gradient
of each needs its own pass back through the trunk. On the CPU, a loop of ``torch.autograd.grad``
beats ``is_grads_batched`` and the autogram engine of torchjd (../shared/notes/measurements.md), so
this engine is that loop, writing each task's gradients into preallocated ``(m, *shape)`` blocks.
For an approximation at the cost of one trunk pass, see
:class:`gradsurgery.engines.representation.RepresentationJacobian`.

Losses given as a vector. ``autograd.grad(v[i])`` of an ``(m,)`` vector ``v`` flows back through
the op that made ``v``, which sends zero gradients into every other task's branch: m times the
heads' backward cost, and a ``0·∞`` there turns into NaN. When ``v`` is ``torch.stack`` of scalar
losses (the common ``torch.stack([l1, l2])``), the engine starts each task's pass at the stack's
input instead (its autograd edge, :class:`torch.autograd.graph.GradientEdge`), which costs what a
list of losses does (also after ``index_select``, which ``present=`` applies). Any other vector
(``torch.stack(...) * w``, ``torch.cat``) is differentiated entry by entry as it is.

Example:
    >>> import torch
    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> losses = torch.stack([(w ** 2).sum(), w[0] * 3])
    >>> grads = SharedInputJacobian([w])(losses)
    >>> grads.jacobian.blocks[0]
    tensor([[2., 4.],
            [3., 0.]])
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge

from gradsurgery.engines.per_task_gradients import OwnedGradients, PerTaskGradients
from gradsurgery.jacobian import TaskJacobian

__all__ = ["SharedInputJacobian"]


class SharedInputJacobian:
    """Per-task gradients of ``params`` by one ``autograd.grad`` call per task loss.

    Args:
        params: the parameters to differentiate (shared and task-specific alike).
        shared: which of them are shared, when known. Then only the shared ones get ``(m, ...)``
            Jacobian blocks; every other one keeps the gradient of each task that reaches it
            once (``owned``): no zero rows for the tasks that do not (None: blocks for all).
    """

    def __init__(self, params: Sequence[Tensor], shared: Sequence[bool] | None = None) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("SharedInputJacobian needs at least one parameter")
        if shared is not None and len(shared) != len(self.params):
            raise ValueError(f"{len(shared)} shared flags for {len(self.params)} parameters")
        # with nothing shared there is nothing to split off (the caller reports that)
        self.shared = list(shared) if shared is not None and any(shared) else None

    def __call__(
        self,
        losses: Tensor | Sequence[Tensor],
        tasks: Tensor | None = None,
        *,
        retain_graph: bool = False,
    ) -> PerTaskGradients:
        """Differentiate each task loss.

        Args:
            losses: the present tasks' losses: a sequence of scalars, or a ``(m,)`` vector (best
                made by ``torch.stack`` of the scalars: see the module docstring).
            tasks: their indices among all tasks (default: ``0..m-1``).
            retain_graph: keep the graph after the last task (as in ``Tensor.backward``).
        """
        items: list[Tensor | GradientEdge | None]
        if isinstance(losses, Tensor):
            if losses.dim() != 1:
                raise ValueError(f"expected a vector of task losses, got {tuple(losses.shape)}")
            values = losses.detach()
            edges = stacked_loss_edges(losses)
            items = list(edges) if edges is not None else list(losses.unbind())
        else:
            scalars = [loss.reshape(()) for loss in losses]
            values = torch.stack([loss.detach() for loss in scalars])
            items = list(scalars)
        m = len(items)
        seed = torch.ones((), dtype=values.dtype, device=values.device)
        rows = [k for k, s in enumerate(self.shared or [True] * len(self.params)) if s]
        others = [k for k in range(len(self.params)) if k not in set(rows)]
        # Every row is written below (a gradient, or zeros where a loss does not reach a parameter),
        # so the blocks need no zero fill first.
        blocks = [
            torch.empty((m, *p.shape), dtype=p.dtype, device=p.device)
            for p in (self.params[k] for k in rows)
        ]
        owned: tuple[list[Tensor], list[Tensor], list[int]] = ([], [], [])
        for i, loss in enumerate(items):
            if loss is None or (isinstance(loss, Tensor) and not loss.requires_grad):
                for block in blocks:  # a constant loss: zero gradient
                    block[i].zero_()
                continue
            try:
                grads = torch.autograd.grad(
                    loss,
                    self.params,
                    grad_outputs=[seed],
                    retain_graph=retain_graph or i < m - 1,
                    allow_unused=True,
                )
            except RuntimeError as e:
                if "donated buffer" in str(e):
                    raise RuntimeError(_DONATED) from e
                raise
            for block, k in zip(blocks, rows, strict=True):
                g = grads[k]
                if g is None:
                    block[i].zero_()
                else:
                    block[i].copy_(g)
            for k in others:
                if grads[k] is not None:
                    owned[0].append(self.params[k])
                    owned[1].append(grads[k])
                    owned[2].append(i)
        if tasks is None:
            tasks = torch.arange(m, device=values.device)
        kept = OwnedGradients(*owned) if self.shared is not None else None
        return PerTaskGradients(
            values,
            tasks,
            TaskJacobian(blocks),
            kept,
            params=[self.params[k] for k in rows],
            shared=[True] * len(rows) if self.shared is not None else None,
        )


_DONATED = (
    "the losses come from a torch.compile'd graph whose backward donates its saved buffers, so it "
    "can run once only, and the exact shared-input gradients need one pass per task. Compile "
    "without donated buffers (torch._functorch.config.donated_buffer=False, set before the "
    "compiled function's first call), or pass representation=z (one pass through the compiled "
    "trunk; approximate), or compute the losses outside the compiled region."
)


def stacked_loss_edges(losses: Tensor) -> list[GradientEdge | None] | None:
    """The autograd edges of the scalars that ``torch.stack`` made ``losses`` from (None for a
    constant), also through an ``index_select`` of the stack (``present=``); None when
    ``losses`` was not made that way."""
    fn = losses.grad_fn
    if fn is None or losses.dim() != 1 or not _edges_supported():
        return None
    index = None
    if type(fn).__name__ == "IndexSelectBackward0" and getattr(fn, "_saved_dim", None) == 0:
        index = fn._saved_index.tolist()  # type: ignore[attr-defined]  # saved tensors: untyped
        fn = fn.next_functions[0][0]
        if fn is None:
            return None
    if type(fn).__name__ != "StackBackward0" or getattr(fn, "_saved_dim", None) not in (0, -1):
        return None
    edges = [GradientEdge(node, nr) if node is not None else None for node, nr in fn.next_functions]
    if index is not None:
        if any(not 0 <= k < len(edges) for k in index):
            return None
        edges = [edges[k] for k in index]
    return edges if len(edges) == len(losses) else None


@functools.cache
def _edges_supported() -> bool:
    """Whether this torch's ``autograd.grad`` takes GradientEdge outputs (checked once)."""
    try:
        x = torch.ones((), requires_grad=True)
        node, nr = torch.stack([x * 2.0]).grad_fn.next_functions[0]  # type: ignore[union-attr]
        assert node is not None
        (g,) = torch.autograd.grad([GradientEdge(node, nr)], [x], grad_outputs=[torch.ones(())])
        return bool(g == 2.0)
    except (TypeError, RuntimeError, AttributeError):
        return False
