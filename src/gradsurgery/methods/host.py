"""Where a method solves its small ``m × m`` problem: on the host in float64, or on the device.

The Gramian methods turn an ``m × m`` Gramian (``m ≤ 50`` in practice) into ``m`` weights with a
sequential or iterative algorithm: PCGrad's projections, interior-point and Newton iterations. On
an accelerator each of their tiny tensor ops is a kernel launch of several microseconds that does
almost no work, so the solve costs hundreds of launches per step, ``O(m)`` or ``O(iterations)`` of
them. On the host the same algorithm runs in float64 with no launches: the Gramian comes over in
one device-to-host copy (one host synchronisation: the host waits for the device to finish the
Gramian, which the next kernels need anyway), and the weights go back in one non-blocking copy
from pinned memory. That is what :func:`solve_on_host` does.

``placement`` (every solver method takes it):

* ``"auto"`` (default): the host, except where a round trip to the host is impossible or
  pointless: while a CUDA graph is being captured or ``torch.compile`` is tracing (the solve then
  runs on the device, where it can be captured), and for a Gramian already on the host (then it
  is solved where it is, in float64).
* ``"host"``: always the host (float64).
* ``"device"``: always where the Gramian is, in its dtype: ``O(m)`` or ``O(iterations)``
  kernels and no host synchronisation, except the convergence tests some solvers read on the
  host (UPGrad/DualProj's pivoting, Nash-MTL with ``tol > 0``, MGDA's Frank–Wolfe; their
  ``device_syncs()`` is None).

Host ops are marked with :func:`gradsurgery.profiling.host_region`, so that the op counts of
:func:`gradsurgery.profiling.count_ops` keep them apart from device launches on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from gradsurgery.profiling import host_region

__all__ = [
    "HostSolver",
    "Placement",
    "check_placement",
    "from_host",
    "on_host",
    "placed",
    "solve_on_host",
    "to_host",
]

Placement = Literal["auto", "host", "device"]
T = TypeVar("T")


class HostSolver:
    """Mixin of the methods that take ``placement``: declares their one host synchronisation per
    step (the Gramian's transfer to the host) unless they solve on the device."""

    placement: Placement

    @property
    def host_syncs(self) -> int | None:
        return self.device_syncs() if self.placement == "device" else 1

    def device_syncs(self) -> int | None:
        """Host synchronisations of a solve on the device: 0, or None where the solver reads its
        convergence test on the host (a data-dependent number, documented by the method)."""
        return 0


def check_placement(placement: str) -> Placement:
    """Validate a ``placement`` argument."""
    if placement not in ("auto", "host", "device"):
        raise ValueError(f"placement must be 'auto', 'host' or 'device', got {placement!r}")
    return placement  # type: ignore[return-value]


def on_host(placement: Placement, like: Tensor) -> bool:
    """Whether a solve for a Gramian like ``like`` runs on the host (see the module docstring)."""
    if placement == "device":
        return False
    if _capturing_or_compiling(like):
        if placement == "host":
            raise RuntimeError(
                "placement='host' needs a host round trip, which is impossible while a CUDA "
                "graph is captured or torch.compile traces: use placement='auto' or 'device'"
            )
        return False
    return True


def _capturing_or_compiling(like: Tensor) -> bool:
    if torch.compiler.is_compiling():
        return True
    return like.is_cuda and torch.cuda.is_current_stream_capturing()


def to_host(*tensors: Tensor) -> list[Tensor]:
    """float64 CPU copies of ``tensors``, in one device-to-host transfer.

    The transfer is the one host synchronisation of a host solve. It is made (and counted by
    :func:`gradsurgery.profiling.count_ops`) on the CPU too, where it costs nothing.
    """
    if len(tensors) == 1:
        flat = tensors[0].detach().cpu()  # the one host synchronisation
        with host_region():
            return [flat.to(torch.float64)]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]).cpu()  # the one sync
    out, start = [], 0
    with host_region():
        flat = flat.to(torch.float64)
        for t in tensors:
            out.append(flat[start : start + t.numel()].view(t.shape))
            start += t.numel()
    return out


def from_host(t: Tensor, like: Tensor) -> Tensor:
    """``t`` (on the host) on ``like``'s device, floating point in ``like``'s dtype (integer and
    boolean tensors keep theirs); non-blocking from pinned memory on an accelerator."""
    dtype = like.dtype if t.is_floating_point() else t.dtype
    if like.device.type == "cpu":
        with host_region():
            return t.to(dtype)
    staged = t.to(dtype).pin_memory()
    return staged.to(like.device, non_blocking=True)


def solve_on_host(fn: Callable[..., T], *tensors: Tensor) -> T:
    """``fn`` applied to float64 host copies of ``tensors`` (one transfer), inside
    :func:`~gradsurgery.profiling.host_region`. The caller moves the results back with
    :func:`from_host`."""
    hosted = to_host(*tensors)
    with host_region():
        return fn(*hosted)


def placed(placement: Placement, fn: Callable[..., T], *tensors: Tensor) -> T:
    """``fn(*tensors)`` where ``placement`` puts it (see the module docstring).

    On the device: ``fn`` gets ``tensors`` as they are. On the host: ``fn`` gets float64 CPU
    copies (one transfer), and its results (a tensor or a tuple of tensors) come back to the
    first tensor's device, floating point in its dtype.
    """
    like = tensors[0]
    if not on_host(placement, like):
        return fn(*tensors)
    out: Any = solve_on_host(fn, *tensors)
    if isinstance(out, tuple):
        return tuple(from_host(t, like) for t in out)  # type: ignore[return-value]
    return from_host(out, like)  # type: ignore[return-value]
