"""The agent's configuration: a pydantic model read from TOML or from AutoTx XML files.

A minimal TOML file names the three folders::

    incoming = "/data/incoming"        # users drop finished acquisitions here
    managed = "/data/managed"          # the agent's own folders (processing, done, error, ...)
    destination = "/mnt/storage"       # the facility's central storage

Everything else has a default with AutoTx's meaning. :func:`load_config` reads a file,
:func:`check_config` looks at the filesystem, and both report *every* problem at once
through :class:`~autotx_lib.errors.ConfigError`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
import socket
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from autotx_lib.addresses import check_pattern, parse_address
from autotx_lib.errors import ConfigError, ConfigProblem

HashAlgorithm = Literal["xxh3_128", "blake3", "sha256", "md5"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ReadinessSettings(_Section):
    """When is an acquisition finished?"""

    quiet_seconds: float = Field(60.0, ge=0, description="No file under the dataset changed "
                                 "(mtime or size) for this long.")
    marker_file: str | None = Field(None, description="If set, a dataset is only ready once a "
                                    "file of this name exists at its top level (AutoTx MarkerFile).")
    check_open_files: bool = Field(True, description="Wait while any process holds a file of "
                                   "the dataset open (psutil).")


class VerifySettings(_Section):
    """How every copied byte is checked.

    ``mode``: ``storage`` (default) flushes each written file, drops its cached pages and
    reads it back, so the hash is of what the disk (or the file server) holds; ``cache``
    re-reads it through the descriptor that wrote it, mostly from the page cache (proves
    the copy, not the storage; cheaper); ``stream`` trusts the hash computed while writing.
    ``readback`` is accepted as the old name of ``storage``.
    """

    algorithm: HashAlgorithm = "xxh3_128"
    mode: Literal["storage", "cache", "stream"] = Field(
        "storage", description="storage: read back what the storage holds (default); cache: "
        "read back through the page cache (cheaper, proves the copy only); stream: trust the "
        "hash computed while writing. 'readback' means storage.")

    @field_validator("mode", mode="before")
    @classmethod
    def _old_mode_names(cls, value: Any) -> Any:
        return "storage" if value == "readback" else value

    recheck_days: float = Field(0.0, ge=0, description="Re-hash every delivered dataset at "
                                "the destination against its manifest this often, one dataset "
                                "at a time while the agent is idle (0: never; see "
                                "`autotx verify`).")


class CopySettings(_Section):
    """How the copy runs."""

    workers: int = Field(4, ge=1, le=64, description="Files copied in parallel.")
    max_attempts_per_file: int = Field(3, ge=1, description="Re-copies of a file that changed "
                                       "or failed verification before the dataset gives up.")
    stall_seconds: float = Field(300.0, gt=0, description="No byte copied for this long (while "
                                 "not paused) aborts the copy; it is retried later.")


DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WINDOW = re.compile(r"^\s*(?:(?P<d1>[a-z]{3})(?:-(?P<d2>[a-z]{3}))?\s+)?"
                     r"(?P<h1>\d{1,2}):(?P<m1>\d{2})-(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$")


@dataclass(frozen=True)
class TimeWindow:
    """When transfers may run, e.g. ``Mon-Fri 19:00-07:00`` (crossing midnight is fine)."""

    days: frozenset[int]  # weekdays on which the window *starts* (0 = Monday)
    start: int  # minutes after midnight
    end: int

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        """Parse ``[Day[-Day]] HH:MM-HH:MM``; raise ValueError saying the expected form."""
        match = _WINDOW.match(text.lower())
        if not match or (match["d1"] and match["d1"] not in DAYS) or \
                (match["d2"] and match["d2"] not in DAYS):
            raise ValueError(f"time window {text!r} is not of the form 'Mon-Fri 19:00-07:00', "
                             "'Sat 08:00-18:00' or '22:00-06:00'")
        start = int(match["h1"]) * 60 + int(match["m1"])
        end = int(match["h2"]) * 60 + int(match["m2"])
        if start > 24 * 60 or end > 24 * 60 or int(match["m1"]) > 59 or int(match["m2"]) > 59:
            raise ValueError(f"time window {text!r}: hours go from 00:00 to 24:00")
        if match["d1"] is None:
            days = frozenset(range(7))
        else:
            first = DAYS.index(match["d1"])
            last = DAYS.index(match["d2"] or match["d1"])
            days = frozenset((first + i) % 7 for i in range((last - first) % 7 + 1))
        return cls(days, start, end)

    def contains(self, when: dt.datetime) -> bool:
        """Whether the local time ``when`` lies inside this window."""
        minute = when.hour * 60 + when.minute
        if self.start < self.end:
            return when.weekday() in self.days and self.start <= minute < self.end
        # crosses midnight: the evening part belongs to the start day, the morning to the next
        if minute >= self.start and when.weekday() in self.days:
            return True
        return minute < self.end and (when.weekday() - 1) % 7 in self.days


class GateSettings(_Section):
    """When the agent must keep its hands off the machine (AutoTx's system checks)."""

    max_cpu_percent: float = Field(25.0, gt=0, le=100)
    min_available_memory_mb: int = Field(512, ge=0)
    blacklisted_processes: list[str] = Field(default_factory=list)
    min_free_destination_mb: int = Field(0, ge=0)
    bandwidth_mb_s: float | str | None = Field(None, description="A cap in MB/s, or a "
                                               "rate ('512k', '20M', 'off') or a timetable "
                                               "like rclone's: 'Mon-Fri 08:00,10M 19:00,off'.")
    hysteresis_seconds: float = Field(4.0, ge=0)
    time_windows: list[str] = Field(default_factory=list, description='e.g. ["Mon-Fri 19:00-07:00", '
                                    '"Sat-Sun 00:00-24:00"]; empty = any time.')

    @field_validator("bandwidth_mb_s")
    @classmethod
    def _bandwidth_parses(cls, value: float | str | None) -> float | str | None:
        from autotx_lib.transfer.bandwidth import check

        if isinstance(value, int | float) and value <= 0:
            raise ValueError("must be a positive number of MB/s (leave it out for no cap)")
        return check(value) if isinstance(value, str) else value

    @field_validator("time_windows")
    @classmethod
    def _windows_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            TimeWindow.parse(text)
        return value


class SpaceCheck(_Section):
    """A folder whose free space is watched (AutoTx SpaceMonitoring/DriveToCheck)."""

    path: Path
    min_free_mb: int = Field(ge=0)


class EmailSettings(_Section):
    """SMTP settings for user and admin notifications; no mail when ``smtp_host`` is empty."""

    smtp_host: str | None = None
    smtp_port: int = Field(25, gt=0, lt=65536)
    security: Literal["none", "starttls", "ssl"] = "none"
    user: str | None = None
    password: SecretStr | None = Field(None, description="Prefer password_env or password_file.")
    password_env: str | None = None
    password_file: Path | None = None
    sender: str | None = None
    subject_prefix: str = "[AutoTx] "
    admin: str | None = None
    admin_debug: str | None = None
    send_transfer_notification: bool = True
    send_admin_notification: bool = True
    admin_notification_delta_minutes: int = Field(60, ge=0)
    grace_notification_delta_minutes: int = Field(720, ge=0)
    storage_notification_delta_minutes: int = Field(720, ge=0)
    user_addresses: dict[str, str] = Field(default_factory=dict)
    user_address_pattern: str | None = Field(None, description='e.g. "{user}@example.org"')
    templates_dir: Path | None = None

    @field_validator("sender", "admin", "admin_debug")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        if value:  # empty: no such mail (AutoTx XML may leave the element empty)
            try:
                parse_address(value)
            except ValueError as error:
                raise ValueError(f"not one e-mail address ({error}); write one address, "
                                 "e.g. 'admin@example.org' or 'Name <admin@example.org>'") from None
        return value

    @field_validator("user_addresses")
    @classmethod
    def _one_address_each(cls, value: dict[str, str]) -> dict[str, str]:
        for user, address in value.items():
            try:
                parse_address(address)
            except ValueError as error:
                raise ValueError(f"the address of {user!r} is not one e-mail address "
                                 f"({error})") from None
        return value

    @field_validator("user_address_pattern")
    @classmethod
    def _pattern_gives_an_address(cls, value: str | None) -> str | None:
        if value:
            check_pattern(value)
        return value


class SessionSettings(_Section):
    """Instrument sessions: who used the microscope, when; live sync while they run."""

    live_sync: bool = Field(False, description="Copy (verified) the session user's files to "
                            "the destination's staging area while the session runs.")
    live_quiet_seconds: float = Field(30.0, ge=0, description="A file unchanged this long "
                                      "is synced during the session.")
    idle_timeout_minutes: float = Field(240.0, gt=0, description="A session with no new or "
                                        "changed file for this long is closed (timeout).")
    on_conflict: Literal["end", "refuse"] = Field("end", description="Starting a session "
                                                  "while one is open: end it, or refuse.")
    follow_login: bool = Field(False, description="Start and end sessions with the console "
                                                  "user's login and logout (psutil.users()).")
    login_debounce_seconds: float = Field(60.0, ge=0, description="A login or logout counts "
                                          "once it held this long (flapping is ignored).")


class OmeroSettings(_Section):
    """Import delivered datasets into OMERO (needs ``python3 tools/setup_omero.py``).

    The password is never written here: ``password_env`` names an environment variable,
    ``password_file`` a file holding it (``OMERO_PASSWORD`` is used when both are unset).
    """

    enabled: bool = False
    host: str | None = None
    port: int = Field(4064, gt=0, lt=65536)
    secure: bool = True
    user: str | None = None
    password_env: str | None = Field("OMERO_PASSWORD", description="Environment variable "
                                     "holding the password.")
    password_file: Path | None = Field(None, description="A file holding the password "
                                       "(readable by the agent's user only).")
    group: str | None = None
    target: Literal["auto", "project/dataset", "dataset", "screen"] = Field(
        "auto", description="auto: plates into a Screen, everything else into Project/Dataset.")
    project: str = Field("{user}", description="Name template: {user}, {dataset}, "
                         "{instrument}, {date}.")
    dataset: str = "{dataset}"
    screen: str = "{user}"
    transfer: Literal["upload", "ln_s"] = Field("upload", description="ln_s imports in place "
                                                "(the server must see the destination).")
    run_in_agent: bool = Field(True, description="Run the import runs on a pipeline engine "
                               "thread of the agent (else `autotx pipelines serve` runs them).")
    max_attempts: int = Field(5, ge=1, description="Tries of one import before it gives up.")
    retry_seconds: float = Field(60.0, gt=0, description="First retry delay; doubles each time.")
    max_retry_seconds: float = Field(3600.0, gt=0)

    @field_validator("project", "dataset", "screen")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        import string

        try:
            names = [n for _, n, _, _ in string.Formatter().parse(value) if n is not None]
        except ValueError as error:
            raise ValueError(f"bad name template: {error}") from None
        unknown = [n for n in names if n not in ("user", "dataset", "instrument", "date")]
        if unknown or not value.strip():
            raise ValueError("a non-empty name template using only {user}, {dataset}, "
                             f"{{instrument}}, {{date}}; got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_plain_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("the OMERO password is never written in the configuration: remove "
                             "`password` and use password_env (an environment variable's name) "
                             "or password_file")
        return data

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> OmeroSettings:
        if self.enabled and not (self.host or os.environ.get("OMERO_HOST")):
            raise ValueError("enabled needs a host (host = \"omero.example.org\", or OMERO_HOST)")
        if self.enabled and not (self.user or os.environ.get("OMERO_USER")):
            raise ValueError("enabled needs a user (user = \"importer\", or OMERO_USER)")
        return self


# --- post-delivery pipelines ([pipelines] section) -------------------------------------


class PipelineRule(_Section):
    """One rule of ``[[pipelines.rules]]``: run ``workflow`` on the datasets it matches.

    Every condition given must hold (an empty list matches everything). ``paths`` are
    globs over ``user/dataset`` (e.g. ``"alice/*screen*"``); ``file_types`` are file
    suffixes of which the dataset must hold at least one; ``plate`` true (false) needs a
    dataset that does (does not) look like a screening plate.
    """

    workflow: str = Field(min_length=1)
    instruments: list[str] = Field(default_factory=list, description="host_alias values.")
    users: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list, description='Globs over "user/dataset".')
    file_types: list[str] = Field(default_factory=list, description='e.g. [".czi", ".nd2"].')
    plate: bool | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Given to the workflow.")
    timeout_seconds: float | None = Field(None, gt=0, description="Overrides the default.")

    @field_validator("file_types")
    @classmethod
    def _suffixes(cls, value: list[str]) -> list[str]:
        return [v.lower() if v.startswith(".") else f".{v.lower()}" for v in value]


class PipelinesSettings(_Section):
    """Workflows run after delivery on dask (see :mod:`autotx_lib.pipelines`).

    No rules: nothing runs by itself (``autotx pipelines run`` still works by hand).
    """

    scheduler: str | None = Field(None, description='A dask scheduler address such as '
                                  '"tcp://dask.example.org:8786"; default: a local cluster '
                                  "started once and reused.")
    local_workers: int = Field(2, ge=1, le=256, description="Worker processes of the local "
                               "cluster.")
    connect_timeout_seconds: float = Field(10.0, gt=0, description="How long connecting to "
                                           "the scheduler may take before runs wait (tried "
                                           "again 30 s later).")
    results_dir: Path | None = Field(None, description="Where reports and previews go; "
                                     "default managed/results (never inside the delivered "
                                     "data, which must match its manifest).")
    run_in_agent: bool = Field(True, description="Run due workflows from a thread of the "
                               "agent (else `autotx pipelines serve` runs them).")
    timeout_seconds: float = Field(3600.0, gt=0, description="A run taking longer is "
                                   "cancelled and marked timeout.")
    max_attempts: int = Field(3, ge=1, description="Tries of a run failing with a retryable "
                              "error (an unreachable share or server, an engine stopped "
                              "mid-run).")
    retry_seconds: float = Field(60.0, ge=0, description="First retry delay; doubles each time.")
    max_retry_seconds: float = Field(3600.0, ge=0)
    workflows: dict[str, str] = Field(default_factory=dict, description='Your own workflows: '
                                      'name = "package.module:function".')
    rules: list[PipelineRule] = Field(default_factory=list)


# --- plate QC ([qc] section) ---------------------------------------------------------


class QcSettings(_Section):
    """Plate QC defaults for ``autotx qc``, the plate dashboard and the QC pipeline.

    ``thresholds`` overrides any of ``autotx_lib.imaging.qc_verdicts.DEFAULT_THRESHOLDS``
    (``empty``, ``saturated``, ``out_of_focus``, ``dark``, ``bright``; dashes work too)::

        [qc]
        thresholds = { out-of-focus = 0.9, dark = 0.2 }
        controls = ["1", "12"]          # columns 1 and 12 are the intensity reference
        templates_dir = "/etc/autotx/templates"   # its plate_qc_report.html replaces ours
    """

    thresholds: dict[str, float] = Field(default_factory=dict, description="Verdict "
                                         "thresholds by name, e.g. {out-of-focus = 0.9}.")
    controls: list[str] = Field(default_factory=list, description="Control wells, columns "
                                "(\"12\") or rows (\"H\") for the intensity reference.")
    templates_dir: Path | None = Field(None, description="A folder holding your own "
                                       "plate_qc_report.html.")

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        from autotx_lib.imaging.qc_verdicts import resolve_thresholds

        limits = resolve_thresholds(value)
        return {key: limits[key] for key in limits
                if key in {k.strip().lower().replace("-", "_").replace(" ", "_") for k in value}}

    @field_validator("controls")
    @classmethod
    def _controls_parse(cls, value: list[str]) -> list[str]:
        from autotx_lib.imaging.qc_verdicts import parse_controls

        parse_controls(value)
        return value


def load_qc_settings(path: str | os.PathLike[str]) -> QcSettings:
    """Read only the ``[qc]`` table of a TOML file (it need not be a whole agent config).

    Raises
    ------
    ConfigError
        The file is missing, is not TOML, or its ``[qc]`` table is invalid.
    """
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(source, [ConfigProblem("file", f"cannot read it: {error}",
                                                 "check the path")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, [ConfigProblem("file", f"not valid TOML: {error}",
                                                 "fix the syntax")]) from None
    try:
        return QcSettings.model_validate(data.get("qc") or {})
    except ValidationError as error:
        problems = _problems_from(error)
        raise ConfigError(source, [ConfigProblem(f"qc.{p.key}", p.message, p.fix)
                                   for p in problems]) from None


class HubLink(_Section):
    """Where the agent reports (``[hub]``): unset ``url`` means no hub."""

    url: str | None = Field(None, description="The hub's base URL, e.g. "
                            "'https://hub.example.org:8765'.")
    token_file: Path | None = Field(None, description="File holding this agent's hub token "
                                    "(`autotx hub token add NAME --role agent`).")
    token_env: str | None = Field(None, description="Or: environment variable holding it.")
    agent_id: str | None = Field(None, description="The agent's name at the hub; default: "
                                 "host_alias (must match the token's agent id).")
    interval_seconds: float = Field(5.0, gt=0, description="Heartbeat, push and command "
                                    "poll period.")
    timeout_seconds: float = Field(10.0, gt=0)
    ca_file: Path | None = Field(None, description="CA bundle for a hub with a "
                                 "self-signed certificate.")

    @model_validator(mode="after")
    def _token_given(self) -> HubLink:
        if self.url and not (self.token_file or self.token_env):
            raise ValueError("[hub] url needs token_file or token_env (the agent's hub token)")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError("[hub] url must start with http:// or https://")
        return self


class DestinationSettings(_Section):
    """One place datasets are delivered to: a ``[[destinations]]`` entry.

    The first entry is the primary destination (the storage users read: a folder, or an
    ``smb://`` share written without a mount); the others get the same verified copy, e.g.
    a backup. Live sync, pipelines and OMERO import read the delivered data from a folder,
    so they need a folder primary.

    Examples
    --------
    >>> backup = DestinationSettings(name="backup", url="/mnt/backup", required=False,
    ...                              time_windows=["Mon-Sun 20:00-06:00"])
    >>> backup.local_path
    PosixPath('/mnt/backup')
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A short name "
                      "shown in status and mails, e.g. 'storage' or 'backup'.")
    url: str = Field(description="A folder path, file:///path or smb://[user@]server/share/path.")
    required: bool = Field(True, description="true: the original moves to the grace area only "
                           "once this destination holds a verified copy; false: it catches up "
                           "later and never holds the others up.")
    tmp_dir: str | None = Field(None, description="Relative to this destination; default: "
                                "tmp_transfer_dir.")
    time_windows: list[str] = Field(default_factory=list, description="When this destination "
                                    "is written, e.g. [\"Mon-Sun 20:00-06:00\"]; empty = any time.")
    bandwidth_mb_s: float | None = Field(None, gt=0, description="A cap in MB/s for copies "
                                         "that include this destination.")
    min_free_mb: int = Field(0, ge=0, description="Free space to leave on this destination.")
    username: str | None = Field(None, description="SMB user, when the URL names none.")
    password_env: str | None = Field(None, description="SMB: the environment variable that "
                                     "holds the password.")
    password_file: Path | None = Field(None, description="SMB: a file holding the password, "
                                       "readable only by the agent's user.")
    require_signing: bool = Field(False, description="SMB: sign the file data too (by "
                                  "default only when the server requires signing; every "
                                  "copy is read back and hashed either way).")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        from autotx_lib.transfer.destinations.url import check_url

        return check_url(value)

    @field_validator("tmp_dir")
    @classmethod
    def _tmp_dir_is_relative(cls, value: str | None) -> str | None:
        return value if value is None else _relative_folder(value)

    @field_validator("time_windows")
    @classmethod
    def _windows_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            TimeWindow.parse(text)
        return value

    @property
    def local_path(self) -> Path | None:
        """The folder, for a destination on this machine (or mounted); None for smb://."""
        from autotx_lib.transfer.destinations.url import local_path_of

        return local_path_of(self.url)

    @property
    def credentials(self) -> dict[str, Any]:
        """What :func:`~autotx_lib.transfer.destinations.open_destination` needs to log in."""
        given = {"username": self.username, "password_env": self.password_env,
                 "password_file": self.password_file}
        return {key: value for key, value in given.items() if value is not None}

    def due(self, when: dt.datetime) -> bool:
        """Whether this destination may be written at local time ``when`` (its windows)."""
        return not self.time_windows or any(TimeWindow.parse(w).contains(when)
                                            for w in self.time_windows)


def _relative_folder(value: str) -> str:
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if not value or PurePosixPath(value).is_absolute() or ".." in parts:
        raise ValueError("must be a plain folder name relative to destination, "
                         "e.g. '.autotx-tmp'")
    return value


class Config(_Section):
    """Everything the agent needs to know; see the module docstring for a minimal file.

    Examples
    --------
    >>> cfg = Config(incoming="/data/in", managed="/data/managed", destination="/mnt/store")
    >>> cfg.verify.algorithm
    'xxh3_128'
    >>> cfg.journal_url.startswith("sqlite:///")
    True
    """

    incoming: Path
    managed: Path
    destination: Path | None = Field(None, description="The primary destination folder (set "
                                     "from the first [[destinations]] entry when those are "
                                     "given; none when that entry is an smb:// share).")
    destinations: list[DestinationSettings] = Field(
        default_factory=list, description="Several destinations: [[destinations]] entries "
        "with name, url, required, time_windows, bandwidth_mb_s, min_free_mb; the first is "
        "the primary. Leave out for the one `destination`.")
    host_alias: str = Field(default_factory=socket.gethostname)
    agent_id: str = Field(None, min_length=1, description="Who owns the journal; default: "  # type: ignore[assignment]
                          "host_alias. A journal of another agent_id is refused at start.")
    destination_alias: str = "central storage"
    tmp_transfer_dir: str = Field(".autotx-tmp", description="Relative to destination; "
                                  "datasets are assembled there, then renamed into place.")
    create_user_dirs: bool = Field(False, description="false: datasets of users without a "
                                   "folder at the destination go to managed/unmatched/.")
    journal: str | None = Field(None, repr=False,  # the URL may hold a password
                                description="SQLAlchemy URL; default: SQLite in managed/.")
    poll_seconds: float = Field(5.0, gt=0, description="How often incoming/ is scanned.")
    grace_period_days: int = Field(30, ge=0)
    submit_roots: list[Path] = Field(default_factory=list, description="Folders that "
                                     "`autotx submit` accepts paths from; default: incoming's "
                                     "parent folder (the instrument's data drive).")
    log_file: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    copy_: CopySettings = Field(default_factory=CopySettings, alias="copy")
    gate: GateSettings = Field(default_factory=GateSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    space_monitoring: list[SpaceCheck] = Field(default_factory=list)
    omero: OmeroSettings = Field(default_factory=OmeroSettings)
    qc: QcSettings = Field(default_factory=QcSettings)
    hub: HubLink = Field(default_factory=HubLink)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    pipelines: PipelinesSettings = Field(default_factory=PipelinesSettings)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _agent_id_defaults_to_host_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("agent_id") is None:
            data = {**data, "agent_id": data.get("host_alias") or socket.gethostname()}
        return data

    @model_validator(mode="before")
    @classmethod
    def _primary_from_destinations(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("destinations") or \
                data.get("destination") is not None:
            return data
        first = data["destinations"][0]
        url = first.url if isinstance(first, DestinationSettings) else \
            first.get("url") if isinstance(first, dict) else None
        if isinstance(url, str):
            from autotx_lib.transfer.destinations.url import local_path_of

            try:
                primary = local_path_of(url)
            except ValueError:
                return data  # the entry's own validation names the problem
            if primary is not None:
                data = {**data, "destination": primary}
        return data

    @model_validator(mode="after")
    def _destinations_agree(self) -> Config:
        config = self
        names = [d.name for d in config.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"[[destinations]] names must differ: {names}")
        if not config.destinations and config.destination is None:
            raise ValueError("give `destination` (a folder) or [[destinations]] entries "
                             "(the first is the primary destination)")
        if config.destinations:
            first = config.destinations[0]
            if (first.local_path is None) != (config.destination is None) or \
                    (first.local_path is not None and config.destination is not None and
                     os.path.abspath(first.local_path) != os.path.abspath(config.destination)):
                raise ValueError("give either `destination` or [[destinations]] (whose first "
                                 "entry is the primary destination), not both")
            if not first.required:
                raise ValueError("the first [[destinations]] entry is the primary destination: "
                                 "it cannot be required = false")
        if config.destination is None:
            config._refuse_folder_features()
        return config

    def _refuse_folder_features(self) -> None:
        """With an smb:// primary, refuse what reads the delivered data from a folder."""
        needs = [what for what, used in (
            ("[sessions] live_sync", self.sessions.live_sync),
            ("[[pipelines.rules]]", bool(self.pipelines.rules)),
            ("[omero] enabled", self.omero.enabled)) if used]
        if needs:
            raise ValueError(f"{' and '.join(needs)} read the delivered data from a folder, "
                             "but the primary destination is an smb:// share; mount the share "
                             "and give its folder as the first [[destinations]] entry, or turn "
                             f"{'them' if len(needs) > 1 else 'it'} off")

    @field_validator("tmp_transfer_dir")
    @classmethod
    def _tmp_dir_is_relative(cls, value: str) -> str:
        return _relative_folder(value)

    @field_validator("journal")
    @classmethod
    def _journal_is_a_url(cls, value: str | None) -> str | None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if value is not None:
            try:
                make_url(value)
            except (ArgumentError, ValueError):  # never repeat the URL: it may hold a password
                raise ValueError("not a database URL; e.g. 'sqlite:////data/autotx.sqlite' or "
                                 "'postgresql+psycopg://autotx@db.example.org/autotx'") from None
        return value

    @property
    def journal_url(self) -> str:
        """The SQLAlchemy URL of the journal (SQLite inside ``managed`` by default)."""
        return self.journal or f"sqlite:///{self.managed / 'autotx.sqlite'}"

    @property
    def tmp_path(self) -> Path:
        """The primary destination's temporary transfer folder (a folder primary only)."""
        if self.destination is None:
            raise ValueError("the primary destination is an smb:// share: it has no local "
                             "tmp folder")
        return self.destination / self.tmp_transfer_dir

    @property
    def primary(self) -> DestinationSettings:
        """The primary destination (the first of :attr:`targets`)."""
        return self.targets[0]

    @property
    def primary_shown(self) -> str:
        """The primary destination as a person reads it: its folder, or its URL."""
        return str(self.destination) if self.destination is not None else self.primary.url

    @property
    def targets(self) -> list[DestinationSettings]:
        """Every destination datasets are delivered to, the primary first.

        The ``[[destinations]]`` entries, or one entry named ``primary`` made from
        ``destination``.
        """
        if self.destinations:
            return list(self.destinations)
        return [DestinationSettings(name="primary", url=str(self.destination))]


# --- reading -------------------------------------------------------------------------

_FIXES = {
    "missing": "add this key",
    "extra_forbidden": "remove it, or check its spelling (see `autotx config explain`)",
    "literal_error": "use one of the allowed values",
}


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside a field's annotation (``SpaceCheck`` in ``list[SpaceCheck]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (model := _section_model(arg)) is not None:
            return model
    return None


def _spelling_fix(loc: tuple[str | int, ...]) -> str:
    """For an unknown key: "did you mean ...?" from the keys of its own section."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:  # a list index: same model
            continue
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        model = _section_model(fields[part].annotation) if part in fields else None
    if model is None or not isinstance(loc[-1], str):
        return _FIXES["extra_forbidden"]
    keys = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], keys, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'? Otherwise remove it"
    return f"check its spelling or remove it; the keys here are: {', '.join(sorted(keys))}"


def _problems_from(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        key = key.replace("copy_", "copy")
        message, fix = item["msg"], _FIXES.get(item["type"], "")
        if item["type"] == "extra_forbidden" and item["loc"]:
            message, fix = "unknown key", _spelling_fix(item["loc"])
        problems.append(ConfigProblem(key, message, fix))
    return problems


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a mapping into a :class:`Config`, raising ConfigError with every problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        problems = _problems_from(error)
        folders = [data.get(key) for key in ("incoming", "managed", "destination")]
        if all(isinstance(f, str | Path) for f in folders):  # report these too, all at once
            problems += _folder_problems(*(Path(f) for f in folders))
        raise ConfigError(source, problems) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a configuration file.

    Parameters
    ----------
    path : path-like
        A ``.toml`` file; an AutoTx ``.xml`` host file (layered over ``config.common.xml``
        beside it, as AutoTx does); or a folder holding AutoTx's ``config.common.xml`` and
        ``<hostname>.xml``.

    Returns
    -------
    config : Config

    Raises
    ------
    ConfigError
        Listing every problem found, each with its key and a fix.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, [ConfigProblem("(file)", "does not exist",
                                               "give the path of a .toml or AutoTx .xml file")])
    if path.is_dir() or path.suffix.lower() == ".xml":
        from autotx_lib.autotx_xml import read_autotx_xml

        data, _ignored = read_autotx_xml(path)
        return config_from_dict(data, str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(path, [ConfigProblem("(syntax)", str(error),
                                               "fix the TOML syntax at that line")]) from None
    base = path.parent
    for key in ("incoming", "managed", "destination"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    for entry in data.get("destinations", []) if isinstance(data.get("destinations"), list) else []:
        url = entry.get("url") if isinstance(entry, dict) else None
        if isinstance(url, str) and "://" not in url and not url.startswith(("\\\\", "//")) \
                and not Path(url).expanduser().is_absolute():
            entry["url"] = str(base / url)
    return config_from_dict(data, str(path))


@dataclass(frozen=True)
class ConfigKey:
    """One key of the configuration file, as ``autotx config explain`` lists it."""

    key: str  # dotted, e.g. "readiness.quiet_seconds"; "space_monitoring[].path" in a list
    type: str
    default: str  # "required" when there is none
    description: str


def _type_name(annotation: Any) -> str:
    if getattr(annotation, "__origin__", None) is Literal:
        return "one of " + ", ".join(_toml_value(a) for a in annotation.__args__)
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or re.sub(r"\b(typing|pathlib|pydantic\.types)\.", "", str(annotation))


def _toml_value(value: Any) -> str:
    """A default as it would be written in the TOML file."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value if isinstance(value, list | dict) else str(value))


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[ConfigKey]:
    """Every key a configuration file may set, sections included, in the model's order.

    Examples
    --------
    >>> keys = {k.key: k for k in config_keys()}
    >>> keys["readiness.quiet_seconds"].default, keys["verify.algorithm"].default
    ('60.0', '"xxh3_128"')
    """
    result = []
    for name, field in (model or Config).model_fields.items():
        key = prefix + (field.alias or name)
        section = _section_model(field.annotation)
        if section is not None:
            is_list = getattr(field.annotation, "__origin__", None) is list
            result += config_keys(section, f"{key}[]." if is_list else f"{key}.")
            continue
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = "(this computer's name)" if name == "host_alias" else \
                _toml_value(field.default_factory())
        else:
            default = _toml_value(field.default)
        result.append(ConfigKey(key, _type_name(field.annotation), default,
                                field.description or ""))
    return result


def check_config(config: Config, *, for_run: bool = False) -> list[ConfigProblem]:
    """Check the configured folders on disk; return every problem (empty when all is well).

    Folders are compared after resolving symbolic links, so a destination that is a link
    into ``incoming`` is found. The agent refuses to start while this list is not empty. With
    ``for_run``, a destination that is unreachable or read-only is not a problem: the agent
    starts anyway and its datasets wait for the share (retried with backoff, the admin told),
    as after a boot that mounts the share late.
    """
    return _folder_problems(config.incoming, config.managed, config.destination,
                            check_destination=not for_run) + \
        _more_destination_problems(config, check_reachable=not for_run)


def _more_destination_problems(config: Config, *, check_reachable: bool) -> list[ConfigProblem]:
    """The local ``[[destinations]]`` after the first: none may overlap a folder of the
    agent or another destination (one copy would land inside another's tree)."""
    problems: list[ConfigProblem] = []
    taken = {"incoming": config.incoming, "managed": config.managed}
    for number, target in enumerate(config.targets):
        key = f"destinations.{target.name}"
        folder = target.local_path
        if number == 0 and folder is not None:  # the primary: checked as `destination`
            taken[key] = folder
            continue
        if folder is None:
            problems += _credential_problems(key, target)
            continue
        real = Path(os.path.realpath(folder))
        for other, path in taken.items():
            known = Path(os.path.realpath(path))
            if real == known or known in real.parents or real in known.parents:
                problems.append(ConfigProblem(key, f"{folder} overlaps {other} ({path})",
                                              "give each destination its own folder, none "
                                              "inside another or inside incoming/managed"))
        taken[key] = folder
        if check_reachable and not real.is_dir():
            problems.append(ConfigProblem(key, f"{real} is not reachable (missing or not a "
                                          "folder)", "mount the share or fix the path"))
    return problems


def config_warnings(config: Config) -> list[ConfigProblem]:
    """What works but should be fixed: secret files (``*password_file``) others may read.

    Not refusals: ``autotx config check`` prints them and the agent logs them when it
    starts (:func:`autotx_lib.logging_setup.configure_logging`).
    """
    warnings = []
    for key, path in _secret_files(config):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # a missing file is reported where the secret is read
        if os.name == "posix" and mode & 0o077:
            warnings.append(ConfigProblem(key, f"{path} holds a secret and other users can "
                                          f"read or change it (mode {mode:04o})",
                                          f"chmod 600 {path}"))
    return warnings


_SECRET_FILE = re.compile(r"(password|secret|token|key)_file$")


def _secret_files(model: BaseModel, prefix: str = "") -> list[tuple[str, Path]]:
    """(key, path) of every set ``*password_file``-like field, in any section."""
    found = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = prefix + name.rstrip("_")
        if isinstance(value, BaseModel):
            found += _secret_files(value, key + ".")
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for item in value:
                found += _secret_files(item, f"{key}.{getattr(item, 'name', '?')}.")
        elif isinstance(value, Path) and _SECRET_FILE.search(name):
            found.append((key, value))
    return found


def display_url(url: str) -> str:
    """A database URL fit to print or log: its password replaced by ``***``.

    Examples
    --------
    >>> display_url("postgresql+psycopg://autotx:s3cret@db.example.org/autotx")
    'postgresql+psycopg://autotx:***@db.example.org/autotx'
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(a journal URL that cannot be parsed; not shown)"


def _shown(given: Path, real: Path) -> str:
    return str(given) if Path(os.path.abspath(given)) == real else f"{given} (-> {real})"


def _folder_problems(incoming: Path, managed: Path, destination: Path | None, *,
                     check_destination: bool = True) -> list[ConfigProblem]:
    """The agent's own folders, and the primary destination when it is a folder (an smb://
    primary is checked with the other destinations)."""
    problems: list[ConfigProblem] = []
    folders = {"incoming": incoming, "managed": managed}
    if destination is not None:
        folders["destination"] = destination
    # resolved: a symbolic link anywhere in a path must not hide an overlap
    resolved = {k: Path(os.path.realpath(v)) for k, v in folders.items()}
    for key, folder in resolved.items():
        if key == "destination":
            continue
        if folder.exists() and not folder.is_dir():
            problems.append(ConfigProblem(key, f"{folder} is not a folder", "point it at a folder"))
        elif not folder.exists() and not _creatable(folder):
            problems.append(ConfigProblem(key, f"{folder} does not exist and cannot be created",
                                          "create it, or fix the path"))
    for a, b in (("incoming", "managed"), ("incoming", "destination"), ("managed", "destination")):
        if b not in resolved:
            continue
        pa, pb = resolved[a], resolved[b]
        if pa == pb or pa in pb.parents or pb in pa.parents:
            problems.append(ConfigProblem(
                f"{a}/{b}", f"{_shown(folders[a], pa)} and {_shown(folders[b], pb)} overlap",
                "use three separate folders, none inside another (symbolic links resolved)"))
    if _device(resolved["incoming"]) != _device(resolved["managed"]):
        problems.append(ConfigProblem("incoming/managed", "incoming and managed are on different "
                                      "volumes; datasets are moved between them by renaming",
                                      "put both on the instrument's data drive"))
    if not check_destination or "destination" not in resolved:
        return problems
    dest = resolved["destination"]
    if not dest.is_dir():
        problems.append(ConfigProblem("destination", f"{dest} is not reachable (missing or not "
                                      "a folder)", "mount the share or fix the path"))
    elif not os.access(dest, os.W_OK):
        problems.append(ConfigProblem("destination", f"{dest} is not writable by this user",
                                      "grant write access to the agent's user"))
    return problems


def _credential_problems(key: str, target: DestinationSettings) -> list[ConfigProblem]:
    """An ``smb://`` destination's credentials: a user, and a password the agent can read."""
    from autotx_lib.errors import DestinationSettingsError
    from autotx_lib.transfer.destinations.url import open_destination

    try:
        open_destination(target.url, target.credentials).close()  # reads, never connects
    except DestinationSettingsError as error:
        return [ConfigProblem(key, str(error), "fix the destination's credentials")]
    return []


def _device(folder: Path) -> int:
    while not folder.exists():
        folder = folder.parent
    return folder.stat().st_dev


def _creatable(folder: Path) -> bool:
    parent = folder
    while not parent.exists():
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK)


def autotx_path(value: str) -> str:
    """Turn an AutoTx (Windows) path into this system's form, keeping POSIX paths as they are."""
    if "\\" in value or (len(value) >= 2 and value[1] == ":"):
        return PureWindowsPath(value).as_posix()
    return value
