"""Moved: :mod:`autotx_lib.journal.instrument_sessions` (the journal's package holds all SQL).

Kept so that ``from autotx_lib.journal_sessions import SessionStore`` goes on working.
"""

from autotx_lib.journal.instrument_sessions import (  # noqa: F401
    SessionOpenError,
    SessionStore,
    instrument_sessions,
    live_files,
)

__all__ = ["SessionOpenError", "SessionStore", "instrument_sessions", "live_files"]
