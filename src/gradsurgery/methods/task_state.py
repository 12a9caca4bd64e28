"""Per-task state for stateful methods, allocated once the number of tasks is known."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import nn

from gradsurgery.methods.base import TaskStep

__all__ = ["TaskStateMixin", "per_task"]


def per_task(
    num_tasks: int,
    device: torch.device | None,
    fill: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A ``(num_tasks,)`` state vector filled with ``fill`` (float32 by default)."""
    return torch.full((num_tasks,), fill, dtype=dtype, device=device)


class TaskStateMixin:
    """Per-task state (buffers/parameters of length ``num_tasks``) allocated once the number of
    tasks is known: at construction, by :meth:`bind`, or at the first step.

    Subclasses list the state names in ``_task_state_names`` and implement ``_allocate``. Loading a
    ``state_dict`` into an unbound method allocates the state from the saved shapes first, so a
    checkpoint can be restored before the first step.
    """

    _task_state_names: ClassVar[tuple[str, ...]] = ()
    num_tasks: int | None

    def _init_task_state(self, num_tasks: int | None) -> None:
        """In ``__init__``: register the state (empty until bound), and bind it if the number of
        tasks is known already."""
        self.num_tasks = None
        module = cast(nn.Module, self)
        for name in self._task_state_names:
            module.register_buffer(name, None)
        if num_tasks is not None:
            self.bind(num_tasks)

    def bind(self, num_tasks: int, device: torch.device | str | None = None) -> None:
        """Allocate the per-task state for ``num_tasks`` tasks (idempotent for the same number)."""
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
        if self.num_tasks is None:
            self._allocate(num_tasks, torch.device(device) if device is not None else None)
            self.num_tasks = num_tasks
        elif num_tasks != self.num_tasks:
            raise ValueError(
                f"{type(self).__name__} was set up for {self.num_tasks} tasks, not {num_tasks}"
            )

    def _allocate(self, num_tasks: int, device: torch.device | None) -> None:
        raise NotImplementedError

    def _bind_to_step(self, step: TaskStep) -> None:
        self.bind(step.num_tasks, step.losses.device)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        if self.num_tasks is None and self._task_state_names:
            key = prefix + self._task_state_names[0]
            if key in state_dict:
                self.bind(int(state_dict[key].shape[0]), device=state_dict[key].device)
        for name in self._task_state_names:
            saved, current = state_dict.get(prefix + name), getattr(self, name, None)
            if (
                isinstance(saved, torch.Tensor)
                and isinstance(current, torch.Tensor)
                and not isinstance(current, torch.nn.Parameter)
                and saved.dtype != current.dtype
            ):
                # a buffer promoted at run time (to float64, for float64 Gramians): loading into
                # the unpromoted one would round the saved values
                setattr(self, name, current.to(saved.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]
