"""Settings: small JSON values that persist across restarts, and whose journal this is."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from autotx_lib.errors import JournalError
from autotx_lib.journal._base import Records
from autotx_lib.journal.schema import settings, utcnow

AGENT_KEY = "agent_id"


class SettingRecords(Records):
    """Queries and updates of ``settings``; the journal's owner (``agent_id``)."""

    def get_setting(self, key: str) -> Any:
        """A JSON value stored under ``key`` (None when absent)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(settings.c.value).where(settings.c.key == key)).first()
        return json.loads(row[0]) if row else None

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (persists across restarts)."""
        payload = json.dumps(value)
        with self.engine.begin() as conn:
            exists = conn.execute(select(settings.c.key).where(settings.c.key == key)).first()
            if exists:
                conn.execute(update(settings).where(settings.c.key == key)
                             .values(value=payload, updated_at=utcnow()))
            else:
                conn.execute(insert(settings).values(key=key, value=payload, updated_at=utcnow()))

    def _add_setting(self, key: str, value: Any) -> bool:
        """Insert ``key`` unless it exists (True: inserted); atomic against a racing process."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(settings).values(key=key, value=json.dumps(value),
                                                     updated_at=utcnow()))
            return True
        except IntegrityError:
            return False

    @property
    def owner(self) -> str | None:
        """The ``agent_id`` of the agent this journal belongs to (None: not claimed yet)."""
        return self.get_setting(AGENT_KEY)

    def claim(self, agent_id: str, *, readonly: bool = False) -> None:
        """Make this journal ``agent_id``'s, or refuse it when it is another agent's.

        The first agent that opens a journal claims it (a journal of a release before
        agent identities too); from then on only that agent may run on it.
        """
        if not readonly and self._add_setting(AGENT_KEY, agent_id):
            self.log("info", "journal", f"this journal now belongs to agent {agent_id!r}")
            return
        owner = self.owner
        if owner is not None and owner != agent_id:
            raise JournalError(
                f"this journal belongs to agent {owner!r}, not {agent_id!r}; point `journal` "
                f"at this agent's own journal, or set agent_id = {owner!r} if this machine "
                f"replaced {owner!r}")
