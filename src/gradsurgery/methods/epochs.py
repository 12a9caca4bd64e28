"""Epoch bookkeeping for methods whose state moves at epoch boundaries (DWA, STCH).

An epoch closes every ``epoch_length`` calls of the method (one per optimizer step) when that is
given, else only when the loop calls :meth:`~gradsurgery.methods.base.Method.end_epoch` (the
method then declares :attr:`needs_epoch_boundaries`, so that a loop which never signals them
refuses it). The counters (``steps_in_epoch``, ``epochs``) are the module's extra state, saved in
``state_dict``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EpochCounter"]


class EpochCounter:
    """Mixin (before the :class:`~gradsurgery.methods.base.Method` base) counting steps and epochs;
    the method's :meth:`end_epoch` does its own work and calls :meth:`_next_epoch`."""

    epoch_length: int | None
    steps_in_epoch: int
    epochs: int

    def _init_epochs(self, epoch_length: int | None) -> None:
        if epoch_length is not None and epoch_length < 1:
            raise ValueError(f"epoch_length must be at least 1, got {epoch_length}")
        self.epoch_length = epoch_length
        self.steps_in_epoch = 0
        self.epochs = 0

    def _count_step(self) -> None:
        """One more step in the epoch; closes it (:meth:`end_epoch`) when it is full."""
        self.steps_in_epoch += 1
        if self.epoch_length is not None and self.steps_in_epoch >= self.epoch_length:
            self.end_epoch()

    def end_epoch(self) -> None:
        self._next_epoch()

    def _next_epoch(self) -> None:
        self.steps_in_epoch = 0
        self.epochs += 1

    @property
    def needs_epoch_boundaries(self) -> bool:
        """True without ``epoch_length``: epochs then close only on :meth:`end_epoch`."""
        return self.epoch_length is None

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps_in_epoch": self.steps_in_epoch, "epochs": self.epochs}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps_in_epoch = int(state["steps_in_epoch"])
        self.epochs = int(state["epochs"])
