"""One torch thread per test process: on a busy 2-core machine, two OpenMP threads competing with
other processes make small models several times slower, and these tests only train tiny ones."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here with one intra-op thread (the root conftest's ``one_thread``)."""
