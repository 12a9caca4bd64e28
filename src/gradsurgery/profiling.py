"""Device-independent cost proxies: aten ops dispatched and host synchronisations, counted on any device.

On a GPU a small training step is bound by kernel launches and host synchronisations, not by
arithmetic: every aten op that computes something is (at least) one kernel launch of ~5–10 µs of
host time, and every read of device data on the host (``.item()``, ``.tolist()``, ``bool(t)``,
``nonzero``, a blocking copy) stalls the host until the device has caught up. Both can be counted
exactly on the CPU, where they are deterministic, with :func:`count_ops`::

    with count_ops() as c:
        train_step()
    print(c.launches, c.syncs, c.summary())

What is counted:

* ``ops``: every aten op that reaches the Python dispatcher (``TorchDispatchMode``), forward and
  backward, after composite ops have been decomposed: what the device would be asked to do.
* ``launches``: ``ops`` minus those that launch no kernel on an accelerator: views and other
  metadata ops (``is_view`` ops such as ``view``, ``t``, ``select``, ``expand``, ``detach``),
  allocations (``empty``, ``empty_strided``) and ``lift_fresh``. A ``_foreach_*`` op counts as one
  (it launches one kernel per chunk of tensors).
* ``syncs``: the calls that would synchronise the host with an accelerator, whatever device the
  tensors are on now: host reads of tensor data (``item``, ``tolist``, ``numpy``, ``cpu``,
  ``bool``/``int``/``float`` of a tensor, ``aten._local_scalar_dense``), ops whose output size
  depends on the data (``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``,
  ``bincount``, ``repeat_interleave`` without ``output_size``), and tensors built from Python
  data (``torch.tensor``, ``torch.as_tensor`` of a list, which on an accelerator is a blocking
  host-to-device copy). ``sync_events`` says which, in order. One Python-level read may also show
  up as its aten op (``item`` dispatches ``_local_scalar_dense``): it is counted once.

Two kinds of code are told apart by the library itself, so that the proxy stays honest on the CPU:

* :func:`host_region`: work that runs on the host whatever the device (a tiny ``m × m`` solve that
  the library moves to the CPU on purpose). Its aten ops are counted as ``host_ops``, not as
  ``launches``; the transfer into it is a sync, counted as one.
* :func:`deferred_read`: a read of a value copied to the host asynchronously one step earlier (the
  lazy finite check): counted as ``deferred_reads``, not as a sync.

The counts are a proxy: they say how many launches and stalls a step asks for, not how long each
takes. Benchmarks print them beside measured times; tests may assert them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCount", "count_ops", "deferred_read", "host_region"]

#: set inside :func:`host_region` / :func:`deferred_read` (read only by the counting modes)
_IN_HOST_REGION: ContextVar[bool] = ContextVar("gradsurgery_host_region", default=False)
_IN_DEFERRED_READ: ContextVar[bool] = ContextVar("gradsurgery_deferred_read", default=False)

#: aten ops that launch no kernel: allocation and tensor construction without computation.
_NO_KERNEL = frozenset({"empty", "empty_strided", "lift_fresh", "new_empty", "new_empty_strided"})
#: aten ops whose output shape depends on the data, or that read data on the host.
_SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "nonzero",
        "masked_select",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "bincount",
        "equal",
        "is_nonzero",
    }
)
#: Tensor methods that read device data on the host. Each also dispatches at most one aten op
#: in _SYNC_OPS (``item`` → ``_local_scalar_dense``), which is then not counted again.
_HOST_READS = frozenset(
    {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"}
)
#: functions that build a tensor from Python data (a blocking host-to-device copy on an accelerator)
_FROM_HOST = frozenset({"tensor", "as_tensor"})


@dataclass
class OpCount:
    """What :func:`count_ops` saw.

    Attributes:
        ops: aten ops dispatched.
        launches: those that would launch a kernel on an accelerator (see the module docstring).
        syncs: host synchronisations.
        host_ops: aten ops run inside :func:`host_region` (on the host on any device; not in
            ``ops``).
        deferred_reads: reads of values copied to the host a step earlier (not syncs).
        by_op: ``ops`` by aten op name (``"addmm"``, ...).
        sync_events: the name of each synchronisation, in order.
    """

    ops: int = 0
    launches: int = 0
    syncs: int = 0
    host_ops: int = 0
    deferred_reads: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    sync_events: list[str] = field(default_factory=list)

    def summary(self, top: int = 12) -> str:
        """One line: totals and the most frequent ops."""
        common = ", ".join(f"{k} {v}" for k, v in self.by_op.most_common(top))
        syncs = f" ({', '.join(self.sync_events)})" if self.sync_events else ""
        extra = f", {self.host_ops} host ops" if self.host_ops else ""
        extra += f", {self.deferred_reads} deferred reads" if self.deferred_reads else ""
        return (
            f"{self.ops} ops, {self.launches} launches, {self.syncs} syncs{syncs}{extra}; {common}"
        )


class _Dispatch(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch: untyped __init_subclass__
    def __init__(self, count: OpCount, state: dict[str, int]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # torch: untyped __init__
        self.count = count
        self.state = state

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        c = self.count
        if _IN_HOST_REGION.get() or _IN_DEFERRED_READ.get():
            c.host_ops += 1
            return func(*args, **(kwargs or {}))
        c.ops += 1
        c.by_op[name] += 1
        if not (func.is_view or name in _NO_KERNEL):
            c.launches += 1
        sync = name in _SYNC_OPS or _is_mask_index(name, args)
        if name == "repeat_interleave" and (kwargs or {}).get("output_size") is None:
            sync = True
        if sync and self.state["python_reads"] == 0:
            c.syncs += 1
            c.sync_events.append(name)
        return func(*args, **(kwargs or {}))


class _Function(TorchFunctionMode):
    def __init__(self, count: OpCount, state: dict[str, int]) -> None:
        super().__init__()
        self.count = count
        self.state = state

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        read = name in _HOST_READS or (name in _FROM_HOST and args and not _is_tensor(args[0]))
        if read and (_IN_HOST_REGION.get() or _IN_DEFERRED_READ.get()):
            if _IN_DEFERRED_READ.get() and self.state["python_reads"] == 0:
                self.count.deferred_reads += 1
            read = False
            self.state["python_reads"] += 1
            try:
                return func(*args, **(kwargs or {}))
            finally:
                self.state["python_reads"] -= 1
        if read and self.state["python_reads"] == 0:
            self.count.syncs += 1
            self.count.sync_events.append(name)
        if not read:
            return func(*args, **(kwargs or {}))
        self.state["python_reads"] += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.state["python_reads"] -= 1


def _is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _is_mask_index(name: str, args: Any) -> bool:
    """``x[mask]`` with a boolean mask: its size is the number of True entries."""
    if name not in ("index", "index_put", "index_put_") or len(args) < 2:
        return False
    return any(_is_tensor(i) and i.dtype == torch.bool for i in args[1] if i is not None)


@contextmanager
def count_ops() -> Iterator[OpCount]:
    """Count the aten ops, kernel launches and host synchronisations of the enclosed code."""
    count = OpCount()
    state = {"python_reads": 0}
    with _Function(count, state), _Dispatch(count, state):
        yield count


@contextmanager
def _marked(flag: ContextVar[bool]) -> Iterator[None]:
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def host_region() -> AbstractContextManager[None]:
    """Mark code that runs on the host on any device (see the module docstring)."""
    return _marked(_IN_HOST_REGION)


def deferred_read() -> AbstractContextManager[None]:
    """Mark a read of a value that was copied to the host asynchronously a step earlier."""
    return _marked(_IN_DEFERRED_READ)
