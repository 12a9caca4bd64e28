"""The error every environment failure reaches the caller as, naming the task."""

from __future__ import annotations

from typing import Any

__all__ = ["EnvCrashedError"]


class EnvCrashedError(RuntimeError):
    """An environment raised or its worker process died; the message names the task.

    ``task_index`` and ``task_name`` are set when one task is at fault (``None`` otherwise).
    The one-argument constructor form ``EnvCrashedError(other_instance)`` (how gymnasium's async
    vector env re-raises a worker's exception) copies the other instance's fields.
    """

    message: str
    task_index: int | None
    task_name: str | None

    def __init__(
        self, message: Any = "", task_index: int | None = None, task_name: str | None = None
    ) -> None:
        if isinstance(message, EnvCrashedError):
            task_index, task_name, message = message.task_index, message.task_name, message.message
        self.message = str(message)
        self.task_index = task_index
        self.task_name = task_name
        super().__init__(self.message, task_index, task_name)

    def __str__(self) -> str:
        return self.message
