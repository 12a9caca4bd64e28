"""Every registered method through the same checks (as torchjd's ``aggregation/_asserts.py``).

Each name in :func:`gradsurgery.methods.method_names` is driven through its public interface,
:class:`~gradsurgery.backward.MultiTaskBackward`, on a tiny model whose per-task gradients are
given exactly: task ``i``'s loss is ``c_i + <J_i, w - w.detach()> + <H_i, h_i - h_i.detach()>``,
whose value is ``c_i`` and whose gradients are ``J_i`` on the shared ``w`` and ``H_i`` on its own
head ``h_i``. So the Jacobian, the loss values and the dtype are chosen freely, and the update is
read from ``.grad``. A method registered tomorrow is checked the day it is registered. So are a
few compositions ``WEIGHTING+GRADIENT`` (:data:`COMPOSED`; composed names are not registered).

Where a method legitimately lacks a property it says so itself, in one place: the class
attributes of :class:`~gradsurgery.methods.base.Method` (``permutation_equivariant``,
``scale_degree``, ``single_task``) and its ``host_syncs`` property. There are no per-test skips.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from gradsurgery.backward import MultiTaskBackward
from gradsurgery.methods import create_method, method_info, method_names
from gradsurgery.profiling import count_ops

#: compositions run through the same checks (their claims are the instance's, from the parts)
COMPOSED = ["uw+pcgrad", "dwa+pcgrad", "sum+pcgrad"]
NAMES = [*method_names(), *COMPOSED]
M, D, H = 3, 5, 2  # tasks, shared width, head width
STEPS = 3


def _takes(name: str, argument: str) -> bool:
    """Whether the method (a part of the composition, for a composed name) takes ``argument``;
    a composed name routes a bare argument to the parts that take it."""
    return any(
        argument in inspect.signature(method_info(part).cls.__init__).parameters
        for part in name.split("+")
    )


def _kwargs(name: str, seed: int = 0) -> dict[str, object]:
    """Seeded methods get ``seed`` (the only argument the suite passes)."""
    return {"seed": seed} if _takes(name, "seed") else {}


def _data(m: int = M, steps: int = STEPS, seed: int = 0) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per step: ``J`` (m, D) with conflicting rows, ``H`` (m, H), positive losses ``c`` (m,)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        J = torch.randn(m, D, generator=g, dtype=torch.float64)
        J[: m // 2] -= 1.5 * torch.randn(D, generator=g, dtype=torch.float64)
        Hd = torch.randn(m, H, generator=g, dtype=torch.float64)
        c = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
        out.append((J, Hd, c))
    return out


class _Model:
    """The shared ``w`` and one head per task, and the losses of one step's data."""

    def __init__(self, m: int, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.w = torch.zeros(D, dtype=dtype, requires_grad=True)
        self.heads = [torch.zeros(H, dtype=dtype, requires_grad=True) for _ in range(m)]

    @property
    def params(self) -> list[Tensor]:
        return [self.w, *self.heads]

    def losses(self, J: Tensor, Hd: Tensor, c: Tensor, order: Sequence[int]) -> list[Tensor]:
        J, Hd, c = J.to(self.dtype), Hd.to(self.dtype), c.to(self.dtype)
        dw = self.w - self.w.detach()
        return [
            c[i] + (J[i] * dw).sum() + (Hd[i] * (self.heads[i] - self.heads[i].detach())).sum()
            for i in order
        ]

    def grads(self) -> list[Tensor]:
        out = []
        for p in self.params:
            assert p.grad is not None, "every parameter gets a gradient"
            out.append(p.grad.detach().clone())
            p.grad = None
        return out


def _run(
    name: str,
    data: Sequence[tuple[Tensor, Tensor, Tensor]],
    *,
    dtype: torch.dtype = torch.float64,
    order: Sequence[int] | None = None,
    seed: int = 0,
    mtl: MultiTaskBackward | None = None,
    model: _Model | None = None,
) -> list[list[Tensor]]:
    """The update (``.grad`` of ``w`` and of each head) of each step."""
    m = data[0][0].shape[0]
    order = list(range(m)) if order is None else list(order)
    model = model or _Model(m, dtype)
    if mtl is None:
        mtl = MultiTaskBackward(
            model.params, create_method(name, **_kwargs(name, seed)), shared=[model.w], num_tasks=m
        )
    updates = []
    for J, Hd, c in data:
        mtl.backward(model.losses(J, Hd, c, order))
        updates.append(model.grads())
    return updates


def _assert_finite(updates: list[list[Tensor]]) -> None:
    for step, update in enumerate(updates):
        for g in update:
            assert torch.isfinite(g).all(), f"step {step}: non-finite update {g}"


def _assert_close(a: list[list[Tensor]], b: list[list[Tensor]], **tol: float) -> None:
    for step, (ua, ub) in enumerate(zip(a, b, strict=True)):
        for ga, gb in zip(ua, ub, strict=True):
            torch.testing.assert_close(ga, gb, msg=lambda s, step=step: f"step {step}: {s}", **tol)


def _claim(name: str, attribute: str) -> object:
    """A declared property: the class's, or for a composition the instance's (from its parts)."""
    if "+" in name:
        return getattr(create_method(name, **_kwargs(name)), attribute)
    return getattr(method_info(name).cls, attribute)


# --------------------------------------------------------------------------- the checks
@pytest.mark.parametrize("name", NAMES)
def test_zero_jacobian_gives_a_zero_update(name):
    data = [(J * 0, Hd * 0, c) for J, Hd, c in _data()]
    for update in _run(name, data):
        for g in update:
            torch.testing.assert_close(g, torch.zeros_like(g))


@pytest.mark.parametrize("name", NAMES)
def test_one_zero_row_gives_a_finite_update(name):
    data = []
    for J, Hd, c in _data():
        J, Hd = J.clone(), Hd.clone()
        J[1], Hd[1] = 0, 0
        data.append((J, Hd, c))
    updates = _run(name, data)
    _assert_finite(updates)
    for update in updates:  # the zero task's head gets nothing
        torch.testing.assert_close(update[2], torch.zeros_like(update[2]))


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1e5, 1e15])
@pytest.mark.parametrize("name", NAMES)
def test_scaled_jacobian(name, scale):
    """Finite at every scale; ``update(sJ) = s**k update(J)`` where the method claims degree k."""
    data = _data()
    scaled = [(J * scale, Hd * scale, c) for J, Hd, c in data]
    got = _run(name, scaled)
    _assert_finite(got)
    degree = _claim(name, "scale_degree")
    if degree is not None:
        want = [[g * scale**degree for g in u] for u in _run(name, data)]
        _assert_close(got, want, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_one_task_is_plain_training(name):
    """With ``m = 1`` the update is the task's gradient (``single_task == "exact"``), or a positive
    multiple of it on the shared and on the head parameters (``"positive"``); a finite update
    where the method makes no claim (None: DB-MTL's momentum on past gradients)."""
    data = _data(m=1)
    mode = _claim(name, "single_task")
    updates = _run(name, data)
    _assert_finite(updates)
    if mode is None:
        return
    for (J, Hd, _), (gw, gh) in zip(data, updates, strict=True):
        for got, want in ((gw, J[0]), (gh, Hd[0])):
            if mode == "exact":
                torch.testing.assert_close(got, want)
            else:
                assert mode == "positive"
                factor = (got @ want) / (want @ want)
                assert factor > 0
                torch.testing.assert_close(got, factor * want)


@pytest.mark.parametrize("name", NAMES)
def test_permuting_the_tasks_changes_nothing(name):
    if not _claim(name, "permutation_equivariant"):
        return  # declared by the method (a distinguished task, or draws by position)
    data = _data()
    order = [2, 0, 1]
    _assert_close(_run(name, data, order=order), _run(name, data), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_with_a_seed(name):
    data = _data()
    a, b = _run(name, data), _run(name, data)
    _assert_close(a, b, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name):
    """A copy loaded from the state after two steps (made with another seed, so that any random
    state has to come from the state dict) makes the same third step."""
    data = _data(steps=3)
    model = _Model(M, torch.float64)
    first = MultiTaskBackward(
        model.params, create_method(name, **_kwargs(name)), shared=[model.w], num_tasks=M
    )
    _run(name, data[:2], mtl=first, model=model)
    state = first.state_dict()
    second = MultiTaskBackward(
        model.params, create_method(name, **_kwargs(name, seed=1)), shared=[model.w], num_tasks=M
    )
    second.load_state_dict(state)
    want = _run(name, data[2:], mtl=first, model=model)
    got = _run(name, data[2:], mtl=second, model=model)
    _assert_close(got, want, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_dtype_and_device_follow_the_parameters(name, dtype):
    updates = _run(name, _data(), dtype=dtype)
    _assert_finite(updates)
    for update in updates:
        for g in update:
            assert g.dtype == dtype and g.device.type == "cpu"
    if dtype == torch.float32:  # the same update as in float64, to float32 accuracy
        want = [[g.float() for g in u] for u in _run(name, _data())]
        _assert_close(updates, want, rtol=1e-3, atol=1e-4)


def _placements(name: str) -> list[dict[str, object]]:
    """The default, and ``placement="device"`` for the methods that take it."""
    return [{}, {"placement": "device"}] if _takes(name, "placement") else [{}]


@pytest.mark.parametrize(
    ("name", "placement"), [(n, p) for n in NAMES for p in _placements(n)], ids=str
)
def test_no_host_synchronisation_beyond_the_declared_ones(name, placement):
    """A step makes no host synchronisation but the method's own (``host_syncs``: the Gramian
    solvers read the Gramian on the host once per step unless ``placement="device"``; see
    :mod:`gradsurgery.methods.host`)."""
    model = _Model(M, torch.float32)
    method = create_method(name, **_kwargs(name), **placement)
    mtl = MultiTaskBackward(
        model.params, method, shared=[model.w], num_tasks=M, check_finite="lazy"
    )
    (J, Hd, c), *rest = _data()
    mtl.backward(model.losses(J, Hd, c, range(M)))  # first step: state allocated
    for J, Hd, c in rest:
        losses = model.losses(J, Hd, c, range(M))
        with count_ops() as ops:
            mtl.backward(losses)
        if method.host_syncs is not None:  # None: data-dependent convergence reads (documented)
            assert ops.syncs == method.host_syncs, ops.sync_events
    mtl.flush()
