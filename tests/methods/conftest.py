import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here with one intra-op thread (the root conftest's ``one_thread``)."""
