"""Writers of rows (plain dicts of JSON values) to files: JSON Lines, CSV, TensorBoard.

The core records statistics and returns rows without touching a file
(:class:`~gradsurgery.diagnostics.TriadMonitor`); these sinks, one layer up, write them. Each has
``write(row)`` and an idempotent ``close()`` (the core's :class:`~gradsurgery.diagnostics.RowSink`)
and flushes every row as it is written, so a run that is killed keeps everything recorded so far.

* :class:`JsonlSink` — one JSON object per line (a :class:`~gradsurgery.runtime.runlog.JsonlLog`:
  ``truncate_after`` on resume); non-finite floats are written as ``null``.
* :class:`CsvSink` — the scalar columns of triad and curvature rows, header written once.
* :class:`TensorBoardSink` — every numeric value as a scalar at the row's ``step``.
* :func:`triad_monitor` — a :class:`~gradsurgery.diagnostics.TriadMonitor` writing to files.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> out = Path(tempfile.mkdtemp())
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    >>> with triad_monitor(out / "triad.jsonl", task_names=["a", "b"], csv_path=out / "t.csv") as m:
    ...     _ = m.record(0, g @ g.T, torch.tensor([0.5, 2.0]), torch.tensor([0, 1]))
    >>> [row["loss/b"] for row in JsonlSink.read(out / "triad.jsonl")]
    [2.0]
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from gradsurgery.diagnostics.monitor import PER_TASK_COLUMNS, TRIAD_COLUMNS, RowSink, TriadMonitor
from gradsurgery.runtime.runlog import JsonlLog, tensorboard_writer
from gradsurgery.runtime.values import finite_or_none

__all__ = ["CsvSink", "JsonlSink", "TensorBoardSink", "json_safe", "triad_monitor"]


def json_safe(value: Any) -> Any:
    """``value`` with every float made JSON-safe (:func:`~.values.finite_or_none`), through
    dicts, lists and tuples (tuples become lists); other values unchanged."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class JsonlSink(JsonlLog):
    """Rows to a JSON Lines file, one object per line.

    Args:
        path: the file; parent directories are created.
        append: keep what the file holds (a resumed run); by default it is emptied now.
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        super().__init__(path)
        if not append:
            self.path.write_text("", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        super().write(json_safe(row))


class CsvSink:
    """The scalar columns of triad rows (and curvature rows) to a CSV file.

    Columns: ``step``, :data:`~gradsurgery.diagnostics.monitor.TRIAD_COLUMNS`, ``<kind>/<task>``
    for every kind of :data:`~gradsurgery.diagnostics.monitor.PER_TASK_COLUMNS` and task, then
    ``curvature``. The tasks are ``task_names`` or, without names, those of the first triad row;
    the header is written once, with the first triad row (curvature rows before it wait). Cells
    of tasks absent from a step, and undefined values, are empty; list values (the cosine matrix)
    are left out. A file that only ever got curvature rows has the columns ``step, curvature``.
    """

    def __init__(self, path: str | Path, *, task_names: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.task_names = list(task_names) if task_names is not None else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("w", newline="", encoding="utf-8")
        self._writer: csv.DictWriter[str] | None = None
        self._pending: list[dict[str, Any]] = []
        self._dropped_warned = False

    def write(self, row: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"CsvSink({self.path}) is closed")
        if self._writer is None:
            names = self.task_names
            if names is None and "num_pairs" in row:
                names = [key.removeprefix("loss/") for key in row if key.startswith("loss/")]
            if names is None:  # a curvature row before any triad row, and no task names yet
                self._pending.append(row)
                return
            fields = ["step", *TRIAD_COLUMNS]
            fields += [f"{kind}/{name}" for kind in PER_TASK_COLUMNS for name in names]
            self._start([*fields, "curvature"])
        assert self._writer is not None
        flat = {k: v for k, v in row.items() if not isinstance(v, list)}
        dropped = set(flat) - set(self._writer.fieldnames)
        if dropped and not self._dropped_warned:
            warnings.warn(
                f"CsvSink: columns {sorted(dropped)} were not in the header (fixed by the first "
                "row); pass task_names=... to get a column for every task",
                stacklevel=4,
            )
            self._dropped_warned = True
        self._writer.writerow(flat)
        self._file.flush()

    def _start(self, fields: list[str]) -> None:
        assert self._file is not None
        self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(self._pending)
        self._pending.clear()

    def close(self) -> None:
        """Write what waits for a header, then close the file (idempotent)."""
        if self._file is None:
            return
        if self._writer is None and self._pending:
            self._start(["step", "curvature"])
        self._file.close()
        self._file = None


class TensorBoardSink:
    """Every numeric value of a row as a TensorBoard scalar at ``row["step"]``.

    Tags: the key itself when it has a ``/`` (``loss/seg``), else ``prefix + key``
    (``triad/fraction_conflicting``); ``None`` and non-finite values are skipped. Needs TensorBoard
    (``pip install tensorboard``): an :class:`ImportError` says so otherwise.
    """

    def __init__(
        self, log_dir: str | Path, *, prefix: str = "triad/", purge_step: int | None = None
    ) -> None:
        self.prefix = prefix
        self._writer: Any = tensorboard_writer(log_dir, purge_step=purge_step)
        if self._writer is None:
            raise ImportError(
                "TensorBoardSink (triad_monitor(tensorboard_dir=...)) needs TensorBoard; install "
                "it with `pip install tensorboard` (or `pip install gradsurgery[tensorboard]`)"
            )

    def write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            raise ValueError("TensorBoardSink is closed")
        step = row["step"]
        for key, value in row.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            value = finite_or_none(value)
            if value is not None:
                tag = key if "/" in key else self.prefix + key
                self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def triad_monitor(
    path: str | Path | None = None,
    *,
    task_names: Sequence[str] | None = None,
    every: int = 1,
    csv_path: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    full_matrices: bool = False,
) -> TriadMonitor:
    """A :class:`~gradsurgery.diagnostics.TriadMonitor` that writes its rows to files.

    Args:
        path: JSON Lines file (:class:`JsonlSink`); ``None`` for none.
        task_names, every, full_matrices: the monitor's (``full_matrices`` puts the cosine matrix
            in the JSON Lines rows).
        csv_path: optional CSV file (:class:`CsvSink` with ``task_names``).
        tensorboard_dir: optional TensorBoard log directory (:class:`TensorBoardSink`).

    Files are emptied (created, with their parent directories) now; the monitor's ``close()``
    closes them. Nothing is created when TensorBoard is asked for and missing.
    """
    monitor = TriadMonitor(task_names=task_names, every=every, full_matrices=full_matrices)
    # TensorBoard first: a missing install fails before any file is created.
    tb = TensorBoardSink(tensorboard_dir) if tensorboard_dir is not None else None
    sinks: list[RowSink | None] = [
        JsonlSink(path) if path is not None else None,
        CsvSink(csv_path, task_names=task_names) if csv_path is not None else None,
        tb,
    ]
    monitor.sinks.extend(sink for sink in sinks if sink is not None)
    return monitor
