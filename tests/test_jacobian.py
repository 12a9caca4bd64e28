import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsurgery.jacobian import TaskJacobian


def _random_jacobian(m: int, shapes: list[tuple[int, ...]], seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return TaskJacobian([torch.randn((m, *s), generator=g, dtype=dtype) for s in shapes])


def test_gramian_hand_worked():
    jac = TaskJacobian([torch.tensor([[1.0, 2.0], [3.0, -1.0]]), torch.tensor([[[1.0]], [[2.0]]])])
    # rows: (1, 2, 1) and (3, -1, 2): K = [[6, 3], [3, 14]]
    assert torch.equal(jac.gramian(), torch.tensor([[6.0, 3.0], [3.0, 14.0]]))


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_gramian_and_combine_match_the_flat_matrix(m, seed):
    jac = _random_jacobian(m, [(3, 4), (5,), (2, 1, 3)], seed)
    flat = jac.matrix()
    assert flat.shape == (m, jac.num_params) == (m, 12 + 5 + 6)
    torch.testing.assert_close(jac.gramian(), flat @ flat.T)
    assert torch.equal(jac.gramian(), jac.gramian().T)
    w = torch.randn(m, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    combined = torch.cat([c.reshape(-1) for c in jac.combine(w)])
    torch.testing.assert_close(combined, w @ flat)
    # split inverts flattening of one row
    row = flat[0]
    assert torch.equal(torch.cat([p.reshape(-1) for p in jac.split(row)]), row)


def test_half_precision_gramian_is_float32():
    jac = _random_jacobian(3, [(64,)], dtype=torch.bfloat16)
    gram = jac.gramian()
    assert gram.dtype == torch.float32
    ref = jac.matrix().float()
    torch.testing.assert_close(gram, ref @ ref.T)
    assert jac.combine(torch.ones(3))[0].dtype == torch.bfloat16


def test_select_rows():
    jac = _random_jacobian(4, [(2,)])
    sub = jac.select(torch.tensor([3, 1]))
    assert torch.equal(sub.blocks[0], jac.blocks[0][[3, 1]])


def test_validation():
    with pytest.raises(ValueError, match="at least one"):
        TaskJacobian([])
    with pytest.raises(ValueError, match="task dimension"):
        TaskJacobian([torch.zeros(2, 3), torch.zeros(3, 3)])
    jac = _random_jacobian(2, [(3,)])
    with pytest.raises(ValueError, match="expected 2 weights"):
        jac.combine(torch.ones(3))
    with pytest.raises(ValueError, match="3 entries"):
        jac.split(torch.ones(4))


def test_the_cpu_split_k_gramian_equals_the_plain_product():
    """Long blocks are multiplied in column chunks on the CPU (with and without a remainder)."""
    from gradsurgery.jacobian import _chunk_size

    g = torch.Generator().manual_seed(0)
    blocks = [
        torch.randn(5, 400, 400, generator=g, dtype=torch.float64),  # 160,000: chunks of 800
        torch.randn(5, 2053, generator=g, dtype=torch.float64),  # prime-ish: 1024 and a tail
        torch.randn(5, 7, generator=g, dtype=torch.float64),
    ]
    assert _chunk_size(160_000) == 800 and 2053 % _chunk_size(2053) != 0
    flat = torch.cat([b.reshape(5, -1) for b in blocks], dim=1)
    torch.testing.assert_close(TaskJacobian(blocks).gramian(), flat @ flat.T)
