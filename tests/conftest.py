"""Shared fixtures: where the sample data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLEDATA = (ROOT.parent / "shared" / "sampledata").resolve()


@pytest.fixture(scope="session")
def sampledata() -> Path:
    """The shared real microscopy files (../shared/sampledata); never copied into the repo."""
    if not SAMPLEDATA.is_dir():
        pytest.fail(f"sample data folder {SAMPLEDATA} is missing; it belongs beside the repository")
    return SAMPLEDATA
