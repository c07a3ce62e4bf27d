"""The journal's tables (SQLAlchemy Core) and the dataset states.

This is the schema of the newest migration (``migrations/versions``); a test compares
the two, so a column added here without a migration fails the suite.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    """Now, as a timezone-aware UTC datetime (what the journal stores and returns)."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """An aware UTC datetime; a naive value is taken to be UTC already (the journal's
    convention before aware times, and what SQLite gives back)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp that is always aware UTC in Python.

    PostgreSQL stores it as ``timestamp with time zone``; SQLite has no zones, so it is
    stored as naive UTC text and made aware again when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        value = as_utc(value)
        if value is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return as_utc(value)


metadata = MetaData()

datasets = Table(
    "datasets", metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("stamp", String(32), nullable=False),
    Column("state", String(32), nullable=False, index=True),
    Column("incoming_path", Text, nullable=False),
    Column("processing_path", Text, nullable=False),
    Column("tmp_path", Text),
    Column("dest_path", Text),
    Column("final_path", Text),  # done/, error/ or unmatched/ location of the source
    Column("algorithm", String(16), nullable=False),
    Column("total_files", Integer, nullable=False, default=0),
    Column("total_bytes", BigInteger, nullable=False, default=0),
    Column("copied_files", Integer, nullable=False, default=0),
    Column("copied_bytes", BigInteger, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("error", Text),
    Column("manifest_path", Text),
    Column("manifest_digest", String(128)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
)

files = Table(
    "files", metadata,
    Column("id", Integer, primary_key=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("relpath", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("digest", String(128)),
    Column("verified", Boolean, nullable=False, default=False),
    Column("copies", Integer, nullable=False, default=0),
    UniqueConstraint("dataset_id", "relpath"),
)
Index("files_by_dataset", files.c.dataset_id, files.c.verified)

# Deliveries: one per (dataset, destination) when several destinations are configured
# (issue 13). state: pending (not written yet, or must be written again), copying (in the
# dataset's current round), delivered (renamed into place, verified). The original goes to
# the grace area once every required delivery is delivered; optional ones catch up later.
DELIVERY_STATES = ("pending", "copying", "delivered")

deliveries = Table(
    "deliveries", metadata,
    Column("id", Integer, primary_key=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("required", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("next_attempt_at", UTCDateTime),
    Column("tmp_path", Text),
    Column("dest_path", Text),
    Column("manifest_path", Text),
    Column("manifest_digest", String(128)),
    Column("delivered_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("dataset_id", "destination"),
)
Index("deliveries_by_state", deliveries.c.state, deliveries.c.next_attempt_at)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False, index=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id")),
    Column("level", String(8), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
)

sessions = Table(
    "sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("clean", Boolean, nullable=False, default=False),
    Column("state", String(32), nullable=False, default="idle"),
    Column("state_reason", Text),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),  # e.g. transfer-finished, admin-error
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("sent_at", UTCDateTime, index=True),
    Column("error", Text),
)

jobs = Table(
    "jobs", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # e.g. omero-import, plate-qc
    Column("dataset_id", Integer, ForeignKey("datasets.id")),
    Column("state", String(16), nullable=False, index=True),  # see JOB_STATES
    Column("payload", Text, nullable=False, default="{}"),  # JSON: what the job needs
    Column("result", Text),  # JSON: what it produced (e.g. OMERO ids)
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("duration_s", Float),
    Column("error", Text),
)
JOB_STATES = ("created", "started", "finished", "error", "cancelled")

settings = Table(
    "settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Instrument sessions (who used the microscope when) and the files live-synced during them.
# One open session per instrument is enforced by the database itself (a unique index on the
# instrument over open sessions), so two terminals starting a session at once cannot both win.
instrument_sessions = Table(
    "instrument_sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("instrument", String(255), nullable=False),
    Column("user", String(255), nullable=False),
    Column("project", String(255)),
    Column("booking", String(255)),
    Column("note", Text),
    Column("started_by", String(32), nullable=False),  # cli, widget, login, python
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_activity_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("end_reason", String(32)),  # user, logout, timeout, replaced
)
Index("one_open_session_per_instrument", instrument_sessions.c.instrument, unique=True,
      sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL"))

live_files = Table(
    "live_files", metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("instrument_sessions.id"), nullable=False),
    Column("relpath", Text, nullable=False),  # below incoming/<user>/, e.g. run42/img_001.tif
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("ctime_ns", BigInteger),  # a rewrite with the old mtime restored still changes it
    Column("digest", String(128), nullable=False),
    Column("staged_path", Text, nullable=False),
    Column("copies", Integer, nullable=False, default=1),
    Column("synced_at", UTCDateTime, nullable=False),
    UniqueConstraint("session_id", "relpath"),
)

# Pipeline runs: the execution log of workflows run on delivered data (see
# autotx_lib.pipelines). A run goes created -> started -> finished | error | timeout, or
# cancelled; a failed attempt to be retried is error with next_attempt_at set. dedup_key
# (workflow@folder, automatic runs only) is unique: two agents recording the same run share it.
RUN_STATES = ("created", "started", "finished", "error", "cancelled", "timeout")

pipeline_runs = Table(
    "pipeline_runs", metadata,
    Column("id", Integer, primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("dataset_id", Integer),  # the journal's dataset, when the run is about one
    Column("dataset_path", Text, nullable=False),  # the delivered folder (or any folder)
    Column("user", String(255)),
    Column("initiator", String(255), nullable=False),  # agent/instrument, cli, rerun of N
    Column("status", String(16), nullable=False),
    Column("params", Text, nullable=False, default="{}"),  # JSON
    Column("dedup_key", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=1),
    Column("timeout_s", Float),
    Column("next_attempt_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("duration_s", Float),
    Column("error", Text),
    Column("engine", String(255)),  # the engine running it (host:pid:token)
    Column("rerun_of", Integer),
)
Index("pipeline_runs_dedup", pipeline_runs.c.dedup_key, unique=True,
      sqlite_where=text("dedup_key IS NOT NULL"), postgresql_where=text("dedup_key IS NOT NULL"))
Index("pipeline_runs_by_created", pipeline_runs.c.created_at)
Index("pipeline_runs_by_status", pipeline_runs.c.status, pipeline_runs.c.created_at)
Index("pipeline_runs_by_workflow", pipeline_runs.c.workflow, pipeline_runs.c.created_at)
Index("pipeline_runs_by_dataset", pipeline_runs.c.dataset_id)

pipeline_steps = Table(
    "pipeline_steps", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("pipeline_runs.id"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(255), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("status", String(16), nullable=False),  # finished, error, skipped
    Column("message", Text),
)

pipeline_results = Table(
    "pipeline_results", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("pipeline_runs.id"), nullable=False, index=True),
    Column("key", String(255), nullable=False),
    Column("kind", String(8), nullable=False),  # int, float, bool, str, json
    Column("value", Text, nullable=False),  # JSON of the value
)

pipeline_engines = Table(
    "pipeline_engines", metadata,
    Column("id", String(255), primary_key=True),  # host:pid:token
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime),
)

# The states a dataset goes through (see ARCHITECTURE.md, "The folder lifecycle").
CLAIMING = "claiming"          # about to be moved from incoming/ to processing/
QUEUED = "queued"              # in processing/, waiting for (another) copy attempt
COPYING = "copying"            # files being copied into the destination's tmp area
DELIVERING = "delivering"      # verified in tmp; the final rename is about to happen
DELIVERED = "delivered"        # whole at the destination; the source still in processing/
DONE = "done"                  # the source rests in managed/done/ (grace)
UNMATCHING = "unmatching"      # about to move to managed/unmatched/
UNMATCHED = "unmatched"
QUARANTINING = "quarantining"  # about to move to managed/error/
ERROR = "error"
VANISHED = "vanished"          # the folder disappeared before the agent owned it
ACTIVE_STATES = (CLAIMING, QUEUED, COPYING, DELIVERING, DELIVERED, UNMATCHING, QUARANTINING)
FINAL_STATES = (DONE, UNMATCHED, ERROR, VANISHED)
