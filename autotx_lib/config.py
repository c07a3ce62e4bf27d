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
import os
import re
import socket
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
    bandwidth_mb_s: float | None = Field(None, gt=0)
    hysteresis_seconds: float = Field(4.0, ge=0)
    time_windows: list[str] = Field(default_factory=list, description='e.g. ["Mon-Fri 19:00-07:00", '
                                    '"Sat-Sun 00:00-24:00"]; empty = any time.')

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
    run_in_agent: bool = Field(True, description="Run import jobs in a thread of the agent "
                               "(else only `autotx jobs run` runs them).")
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
    destination: Path
    host_alias: str = Field(default_factory=socket.gethostname)
    destination_alias: str = "central storage"
    tmp_transfer_dir: str = Field(".autotx-tmp", description="Relative to destination; "
                                  "datasets are assembled there, then renamed into place.")
    create_user_dirs: bool = Field(False, description="false: datasets of users without a "
                                   "folder at the destination go to managed/unmatched/.")
    journal: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in managed/.")
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

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("tmp_transfer_dir")
    @classmethod
    def _tmp_dir_is_relative(cls, value: str) -> str:
        parts = PurePosixPath(value.replace("\\", "/")).parts
        if not value or PurePosixPath(value).is_absolute() or ".." in parts:
            raise ValueError("must be a plain folder name relative to destination, "
                             "e.g. '.autotx-tmp'")
        return value

    @property
    def journal_url(self) -> str:
        """The SQLAlchemy URL of the journal (SQLite inside ``managed`` by default)."""
        return self.journal or f"sqlite:///{self.managed / 'autotx.sqlite'}"

    @property
    def tmp_path(self) -> Path:
        """The destination's temporary transfer folder."""
        return self.destination / self.tmp_transfer_dir


# --- reading -------------------------------------------------------------------------

_FIXES = {
    "missing": "add this key",
    "extra_forbidden": "remove it, or check its spelling (see `autotx config check --help`)",
    "literal_error": "use one of the allowed values",
}


def _problems_from(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        key = key.replace("copy_", "copy")
        fix = _FIXES.get(item["type"], "")
        problems.append(ConfigProblem(key, item["msg"], fix))
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
    return config_from_dict(data, str(path))


def check_config(config: Config) -> list[ConfigProblem]:
    """Check the configured folders on disk; return every problem (empty when all is well).

    The agent refuses to start while this list is not empty.
    """
    return _folder_problems(config.incoming, config.managed, config.destination)


def _folder_problems(incoming: Path, managed: Path, destination: Path) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    folders = {"incoming": incoming, "managed": managed, "destination": destination}
    resolved = {k: Path(os.path.abspath(v)) for k, v in folders.items()}
    for key, folder in resolved.items():
        if key == "destination":
            continue
        if folder.exists() and not folder.is_dir():
            problems.append(ConfigProblem(key, f"{folder} is not a folder", "point it at a folder"))
        elif not folder.exists() and not _creatable(folder):
            problems.append(ConfigProblem(key, f"{folder} does not exist and cannot be created",
                                          "create it, or fix the path"))
    for a, b in (("incoming", "managed"), ("incoming", "destination"), ("managed", "destination")):
        pa, pb = resolved[a], resolved[b]
        if pa == pb or pa in pb.parents or pb in pa.parents:
            problems.append(ConfigProblem(f"{a}/{b}", f"{pa} and {pb} overlap",
                                          "use three separate folders, none inside another"))
    if _device(resolved["incoming"]) != _device(resolved["managed"]):
        problems.append(ConfigProblem("incoming/managed", "incoming and managed are on different "
                                      "volumes; datasets are moved between them by renaming",
                                      "put both on the instrument's data drive"))
    dest = resolved["destination"]
    if not dest.is_dir():
        problems.append(ConfigProblem("destination", f"{dest} is not reachable (missing or not "
                                      "a folder)", "mount the share or fix the path"))
    elif not os.access(dest, os.W_OK):
        problems.append(ConfigProblem("destination", f"{dest} is not writable by this user",
                                      "grant write access to the agent's user"))
    return problems


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
