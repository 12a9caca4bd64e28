"""Meta-World suites: which tasks, in which order, and how their goals are drawn.

``"MT10"``, ``"MT25"``, ``"MT50"``, ``"MT1:reach-v3"`` (one task with goal variation) or any list of
task names (:func:`resolve_suite`); slot ``i`` of a suite's vector env is task ``i``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["NAMED_SUITES", "SuiteSpec", "all_task_names", "require_metaworld", "resolve_suite"]

#: Suites whose goals come from one stream over the suite (``metaworld.MT10(seed)`` etc.).
NAMED_SUITES: tuple[str, ...] = ("MT10", "MT25", "MT50")


def require_metaworld() -> Any:
    """Import Meta-World, with an install hint when it is missing."""
    try:
        import metaworld
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Meta-World is not installed: pip install 'gradsurgery[rl]' "
            "(metaworld>=3.1,<3.2 with MuJoCo 3.3 wheels; it also needs 'packaging')"
        ) from e
    return metaworld


def all_task_names() -> tuple[str, ...]:
    """The 50 Meta-World v3 task names (MT50 order: alphabetical)."""
    require_metaworld()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


def _suite_tasks(name: str) -> tuple[str, ...]:
    require_metaworld()
    from metaworld import env_dict

    return tuple(
        {"MT10": env_dict.MT10_V3, "MT25": env_dict.MT25_V3, "MT50": env_dict.MT50_V3}[name]
    )


@dataclass(frozen=True)
class SuiteSpec:
    """Which tasks, in which order, and how their goals are drawn (see :func:`sample_goals`).

    ``name`` is ``"MT10"``/``"MT25"``/``"MT50"``, ``"MT1:<task>"`` or ``"custom"``;
    ``goal_stream`` is ``"suite"`` (one stream over the tasks) or ``"per_task"``.
    """

    name: str
    tasks: tuple[str, ...]
    goal_stream: Literal["suite", "per_task"]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def slug(self) -> str:
        """A file-name-friendly label (``MT10``, ``MT1-reach-v3``, ``custom3``)."""
        if self.name.startswith("MT1:"):
            return "MT1-" + self.tasks[0]
        if self.name == "custom":
            return f"custom{len(self.tasks)}"
        return self.name


def _canonical_task(name: str, known: Sequence[str]) -> str:
    text = name.strip().lower()
    if text in known:
        return text
    if f"{text}-v3" in known:
        return f"{text}-v3"
    close = difflib.get_close_matches(text, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown Meta-World task {name!r}{hint} (the v3 tasks are listed by "
        "gradsurgery.rl.envs.all_task_names())"
    )


def resolve_suite(suite: str, tasks: Sequence[str] | None = None) -> SuiteSpec:
    """Parse a suite: ``"MT10"``, ``"MT25"``, ``"MT50"``, ``"MT1:reach-v3"`` (or ``"MT1"`` with
    ``tasks=["reach-v3"]``, or just ``"reach-v3"``), ``"custom"`` with ``tasks``, or
    comma-separated task names (``"reach-v3,push-v3"``). Task names may omit ``-v3``."""
    known = all_task_names()
    text = suite.strip()
    upper = text.upper()
    if upper in NAMED_SUITES:
        if tasks:
            raise ValueError(f"{upper} has a fixed task list; do not pass tasks with it")
        return SuiteSpec(upper, _suite_tasks(upper), "suite")
    head, sep, rest = text.partition(":")
    if re.fullmatch(r"MT\d+", upper) and upper != "MT1":
        raise ValueError(
            f"unknown suite {suite!r}; known suites: {', '.join(NAMED_SUITES)}, MT1:<task> "
            "(e.g. MT1:reach-v3), or comma-separated task names"
        )
    if head.upper() == "MT1":
        names = [rest] if sep else list(tasks or [])
        if len(names) != 1 or not names[0].strip():
            raise ValueError("MT1 needs exactly one task: 'MT1:reach-v3' or tasks=['reach-v3']")
        task = _canonical_task(names[0], known)
        return SuiteSpec(f"MT1:{task}", (task,), "per_task")
    if text.lower() == "custom":
        names = list(tasks or [])
    else:
        if tasks:
            raise ValueError(f"pass either a suite name or tasks, not both ({suite!r}, {tasks!r})")
        names = [t for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"no tasks in suite {suite!r}")
    canonical = tuple(_canonical_task(t, known) for t in names)
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"a task appears twice in {canonical}")
    if len(canonical) == 1:
        return SuiteSpec(f"MT1:{canonical[0]}", canonical, "per_task")
    return SuiteSpec("custom", canonical, "per_task")
