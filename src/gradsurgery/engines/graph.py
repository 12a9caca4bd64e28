"""Which leaf tensors an autograd graph reaches, found by walking ``grad_fn`` without a backward pass.

Used to tell shared from task-specific parameters: a parameter that the graphs of two or more task
losses reach is shared.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["reachable_leaf_tensors", "reachable_leaves"]


def reachable_leaves(root: Tensor) -> set[int]:
    """``id()`` of every leaf tensor requiring grad that ``root``'s graph reaches."""
    return {id(t) for t in reachable_leaf_tensors(root)}


def reachable_leaf_tensors(root: Tensor) -> list[Tensor]:
    """Every leaf tensor requiring grad that ``root``'s graph reaches (each once)."""
    if root.grad_fn is None:
        return [root] if root.requires_grad else []
    found: dict[int, Tensor] = {}
    seen: set[int] = set()
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
        if variable is not None:
            found[id(variable)] = variable
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
    return list(found.values())
