"""An update's statistics, kept on the device until someone reads them.

:meth:`MTSAC.update <gradsurgery.rl.sac.MTSAC.update>` computes a handful of scalars (losses,
temperature, entropy, ...). Turning them into Python floats is a host synchronisation: on an
accelerator the host would wait for the whole update to finish before it can enqueue the next
environment step. :class:`UpdateMetrics` holds them as one device tensor and reads it (one
synchronisation for all of them) the first time a value is looked at. :class:`MetricSums` adds
many updates' metrics on the device, so that a loop that logs every ``log_every`` updates reads
once per log row.

Example:
    >>> import torch
    >>> info = UpdateMetrics(["loss", "alpha"], torch.tensor([0.5, 1.0]))
    >>> info["loss"], dict(info)
    (0.5, {'loss': 0.5, 'alpha': 1.0})
    >>> sums = MetricSums()
    >>> sums.add(info); sums.add(UpdateMetrics(["loss", "alpha"], torch.tensor([1.5, 3.0])))
    >>> sums.means()
    {'loss': 1.0, 'alpha': 2.0}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["MetricSums", "UpdateMetrics"]


class UpdateMetrics(Mapping[str, float]):
    """A read-only mapping of metric names to floats, read from the device on first access.

    Args:
        names: the metric names, in the order of ``values``.
        values: ``(k,)`` tensor of the values (any device; kept until read).
    """

    def __init__(self, names: Sequence[str], values: Tensor) -> None:
        if values.shape != (len(names),):
            raise ValueError(f"{len(names)} names for values of shape {tuple(values.shape)}")
        self.names = list(names)
        #: the ``(k,)`` values on their device (``values()`` is the Mapping method: floats)
        self.tensor = values.detach()
        self._floats: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        if self._floats is None:  # the one host synchronisation, at the first look
            self._floats = dict(zip(self.names, self.tensor.tolist(), strict=True))
        return self._floats

    def __getitem__(self, key: str) -> float:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"UpdateMetrics({self._read()!r})"


class MetricSums:
    """Running sums of :class:`UpdateMetrics` (on their device) and plain float mappings.

    Metrics from :class:`UpdateMetrics` are added without a host synchronisation; other mappings
    (floats) are added on the host. :meth:`means` reads the sums once.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._names: list[str] | None = None
        self._device_sum: Tensor | None = None
        self._device_count = 0
        self._host_sums: dict[str, float] = {}
        self._host_counts: dict[str, int] = {}

    def add(self, info: Mapping[str, Any]) -> None:
        """Add one update's metrics (non-numeric entries are ignored)."""
        if isinstance(info, UpdateMetrics) and self._names in (None, info.names):
            self._names = info.names
            values = info.tensor.to(torch.float64)
            self._device_sum = values if self._device_sum is None else self._device_sum + values
            self._device_count += 1
            return
        for key, value in info.items():
            try:
                x = float(value)
            except (TypeError, ValueError):
                continue
            self._host_sums[key] = self._host_sums.get(key, 0.0) + x
            self._host_counts[key] = self._host_counts.get(key, 0) + 1

    def sums_and_counts(self) -> tuple[dict[str, float], dict[str, int]]:
        """Every metric's sum and count as host floats (one read of the device sums)."""
        sums, counts = dict(self._host_sums), dict(self._host_counts)
        if self._device_sum is not None and self._names is not None:
            for key, value in zip(self._names, self._device_sum.tolist(), strict=True):
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + self._device_count
        return sums, counts

    def load(self, sums: Mapping[str, float], counts: Mapping[str, int]) -> None:
        """Start from saved :meth:`sums_and_counts` (a resumed run)."""
        self.reset()
        self._host_sums = {str(k): float(v) for k, v in sums.items()}
        self._host_counts = {str(k): int(v) for k, v in counts.items()}

    def means(self) -> dict[str, float]:
        """The mean of every metric since the last :meth:`reset`."""
        sums, counts = self.sums_and_counts()
        return {k: sums[k] / counts[k] for k in sums}
