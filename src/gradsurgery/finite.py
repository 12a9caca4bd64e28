"""The NaN/inf check of a step's task losses and gradients: eager, lazy (one step late) or off.

``check_finite=True`` (eager): one reduction on the device and one host synchronisation per step;
a non-finite loss or gradient raises :class:`~gradsurgery.errors.NonFiniteError` naming the task
*before* anything is written to ``.grad``.

``check_finite="lazy"``: the same reduction, but its one-element result is copied to the host
asynchronously and read at the start of the next step (or by :meth:`FiniteCheck.flush`), by which
time the device has long computed it: a step issues no host synchronisation at all. The error
then names the task and the step it happened at, one step late: that step's gradients *have*
been written (and the optimizer has probably applied them), so restore a checkpoint or skip ahead
as the error says. Call ``flush()`` after the last step so that the final step is checked too.

``check_finite=False``: no check (what a float16 ``GradScaler`` needs: it must see the infs to
skip the step).

The fast test sums the checked values and tests ``sum · 0 == 0`` (false exactly for NaN and ±inf,
two kernels): NaN and ±inf propagate through a sum, so a finite sum means every value is finite.
A sum can also overflow while every value is finite; the slow diagnosis that names the task then
finds nothing and no error is raised.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from gradsurgery.errors import NonFiniteError
from gradsurgery.profiling import deferred_read

__all__ = ["CheckFinite", "FiniteCheck"]

CheckFinite = bool | Literal["lazy"]

_GRAD_SCALER_HINT = (
    ". If the losses are scaled by a float16 torch.amp.GradScaler, an overflow now and then is "
    "expected: pass check_finite=False to MultiTaskBackward so that the scaler sees the infs in "
    ".grad and skips the step (and lowers its scale)"
)

#: lazy checks still in flight before the oldest is waited for
_MAX_PENDING = 2


@dataclass
class _Pending:
    step: int
    flag: Tensor  # host copy of "everything finite" (filled asynchronously on an accelerator)
    event: torch.cuda.Event | None
    losses: Tensor
    tasks: Tensor
    grad_sq_norms: list[Tensor]


class FiniteCheck:
    """Checks one step's losses and squared gradient norms; see the module docstring.

    Args:
        mode: ``True`` (eager), ``"lazy"`` or ``False``.
        describe: ``describe(task_index) -> str`` names a task in error messages.
    """

    def __init__(self, mode: CheckFinite, describe: Callable[[int], str]) -> None:
        if mode not in (True, False, "lazy"):
            raise ValueError(f"check_finite must be True, False or 'lazy', got {mode!r}")
        self.mode: CheckFinite = mode
        self.describe = describe
        self._pending: deque[_Pending] = deque()

    def __call__(
        self, step: int, losses: Tensor, tasks: Tensor, grad_sq_norms: Sequence[Tensor]
    ) -> None:
        """Check a step (eager: now; lazy: start the check and read the earlier ones)."""
        if self.mode is False:
            return
        finite = _all_finite([losses, *grad_sq_norms])
        if self.mode is True:
            if not bool(finite):  # the one host synchronisation of the eager check
                self._diagnose(step, losses, tasks, list(grad_sq_norms), late=False)
            return
        self._read(wait_for_all=False)
        if finite.device.type == "cpu":
            flag, event = finite, None
        else:
            flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            flag.copy_(finite, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]  # torch: untyped
            event.record()
        norms = [g.detach() for g in grad_sq_norms]
        self._pending.append(_Pending(step, flag, event, losses.detach(), tasks, norms))

    def flush(self) -> None:
        """Wait for the lazy checks still pending and raise if one of them failed."""
        self._read(wait_for_all=True)

    def _read(self, wait_for_all: bool) -> None:
        while self._pending:
            p = self._pending[0]
            done = p.event is None or p.event.query()  # type: ignore[no-untyped-call]
            if not (done or wait_for_all or len(self._pending) > _MAX_PENDING):
                return
            if p.event is not None:
                p.event.synchronize()
            self._pending.popleft()
            with deferred_read():
                ok = bool(p.flag)
            if not ok:
                self._pending.clear()
                self._diagnose(p.step, p.losses, p.tasks, p.grad_sq_norms, late=True)

    def _diagnose(
        self, step: int, losses: Tensor, tasks: Tensor, norms: list[Tensor], late: bool
    ) -> None:
        """Raise NonFiniteError naming the first task with a NaN/inf loss or gradient."""
        kinds = ["loss", *(["gradient"] * len(norms))]
        task_list = tasks.tolist()
        for kind, values in zip(kinds, [losses.detach(), *norms], strict=True):
            bad = (~torch.isfinite(values)).cpu()
            hits = bad.nonzero().flatten()
            if hits.numel():
                k = int(hits[0])
                detail = f" ({float(values[k])})" if kind == "loss" else ""
                message = (
                    f"{self.describe(task_list[k])} has a non-finite {kind}{detail} at step {step}"
                )
                if late:
                    message += (
                        " (check_finite='lazy' found it one step late: that step's gradients were "
                        "already written, and probably applied by the optimizer)"
                    )
                if kind == "gradient" or not math.isnan(float(values[k])):  # an overflow?
                    message += _GRAD_SCALER_HINT
                raise NonFiniteError(message)


def _all_finite(values: Sequence[Tensor]) -> Tensor:
    """A 0-d bool tensor: whether every entry of ``values`` is finite (one sum, no sync)."""
    total = values[0].detach().sum()
    for v in values[1:]:
        total = total + v.detach().sum().to(total.device)
    return (total * 0).eq(0)
