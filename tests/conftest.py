"""Shared fixtures and helpers: where the sample data lives; waiting for an event."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLEDATA = (ROOT.parent / "shared" / "sampledata").resolve()
T = TypeVar("T")


@pytest.fixture(scope="session")
def sampledata() -> Path:
    """The shared real microscopy files (../shared/sampledata); never copied into the repo."""
    if not SAMPLEDATA.is_dir():
        pytest.fail(f"sample data folder {SAMPLEDATA} is missing; it belongs beside the repository")
    return SAMPLEDATA


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Tests wait for an event (a journal state, a file, a callback), never a fixed time.
    Fails the test with ``what`` in the message when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
