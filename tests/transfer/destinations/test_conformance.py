"""Run the conformance suite on every transport (``dest`` is parametrized in conftest.py)."""

from .conformance import *  # noqa: F403 - the suite's tests are collected here
