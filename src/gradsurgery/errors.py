"""Errors raised for bad input, each saying what was expected and which task is at fault."""

from __future__ import annotations

__all__ = ["DistributedUnsupportedError", "DoubleBackwardError", "LossShapeError", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """A task's loss or gradient is NaN or infinite. The message names the task."""


class LossShapeError(ValueError):
    """Losses of the wrong shape (a vector of per-task losses, or one loss per sample, was expected)."""


class DistributedUnsupportedError(RuntimeError):
    """What cannot be exact under data parallelism (``representation=``, ``"gradnorm"``, ...)."""


class DoubleBackwardError(RuntimeError):
    """A method differentiates through the task gradients and an op of the model cannot."""
