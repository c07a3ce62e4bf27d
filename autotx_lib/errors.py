"""One exception tree for autotx_lib.

Every message says what is wrong and what to do about it. Exceptions carry the
values they talk about as attributes, so callers (the CLI, the agent, dashboards)
can act on them without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autotx_lib.units import human_bytes


class AutotxError(Exception):
    """Base class of every error autotx_lib raises on purpose."""


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One problem found in a configuration: where, what, and how to fix it."""

    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.key}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


class ConfigError(AutotxError):
    """A configuration is invalid; ``problems`` lists every problem at once."""

    def __init__(self, source: str | Path, problems: list[ConfigProblem]):
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{self.source}: {len(self.problems)} problem(s) in the configuration:\n{lines}"
        )


# --- the journal ---------------------------------------------------------------------


class JournalError(AutotxError):
    """The journal (database) cannot be opened or is in an unexpected state."""


class JournalBusyError(JournalError):
    """Another process has held the journal locked for longer than the agent waits."""


class AlreadySuspendedError(AutotxError):
    """Transfers are already suspended; a second suspension would hide the first one's reason."""

    def __init__(self, reason: str, by: str, since):
        self.reason, self.by, self.since = reason, by, since
        super().__init__(
            f"transfers are already suspended by {by} since {since:%Y-%m-%d %H:%M} UTC: "
            f"{reason!r}. Leave it, `autotx resume` first, or give --replace to change the "
            "reason")


class AgentRunningError(AutotxError):
    """Another agent already runs on this managed folder or journal.

    ``holder`` is what that agent wrote in the lock file (``pid``, ``host``, ``started``).
    """

    def __init__(self, lock_file: str | Path, holder: dict):
        self.lock_file = str(lock_file)
        self.holder = dict(holder)
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, running since "
               f"{holder.get('started', '?')}")
        super().__init__(
            f"another autotx agent is already running ({who}; lock {self.lock_file}). Only "
            "one agent may use a managed folder and journal: stop that one first "
            "(`systemctl stop autotx`, or Ctrl-C where it runs), or use `autotx status`."
        )


# --- transfer ------------------------------------------------------------------------


class TransferError(AutotxError):
    """A dataset could not be transferred (the source is always left intact)."""


class UnsafePathError(TransferError):
    """A path would escape its folder, or a name cannot be handled safely.

    Such a dataset is never copied; it goes to quarantine with this reason.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"unsafe path {self.path!r}: {reason}. The dataset is quarantined in "
            "managed/error/ untouched; rename or remove the offending entry and resubmit it."
        )


class EmptyDatasetError(TransferError):
    """A dataset folder holds no file at all."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(
            f"dataset {self.path} contains no files; nothing to transfer. "
            "It is quarantined in managed/error/; remove it, or put the acquisition's files in it "
            "and resubmit."
        )


class UnreadableFileError(TransferError):
    """A source file cannot be read (permissions, I/O error)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot read {self.path}: {reason}. Check the file's permissions "
            "(the agent's user must be able to read it), then resubmit the dataset."
        )


class DestinationError(TransferError):
    """The destination cannot take the dataset now.

    The subclasses say why, by type (a transport classifies its own errors; nobody matches
    message text): :class:`DestinationMissing`, :class:`DestinationReadOnly`,
    :class:`DestinationFullError` (``DestinationFull``), :class:`DestinationPermission`,
    :class:`DestinationAuth`, :class:`DestinationNameTaken`. ``retryable`` tells the agent
    whether the condition may heal by itself (a server back up, space freed); the others
    need someone to act (a password, a permission).
    """

    retryable = True
    advice = "check that the share is mounted and writable"

    def __init__(self, destination: str | Path, reason: str):
        self.destination = str(destination)
        self.reason = reason
        then = "is retried" if self.retryable else "waits until this is fixed"
        super().__init__(
            f"destination {self.destination} cannot take data: {reason}. The dataset stays "
            f"queued and {then}; {self.advice}."
        )


class DestinationMissing(DestinationError):
    """The destination cannot be reached: folder missing, share not mounted or absent,
    server down or unreachable."""

    advice = "check that the server is up, the share exists and (for a folder) it is mounted"


class DestinationNotMountedError(DestinationMissing):
    """The destination folder exists but is not the destination: its marker file is missing
    or belongs to another destination (typically: the share is not mounted and the empty
    mount point remains)."""

    advice = "check that the share is mounted and writable"

    def __init__(self, destination: str | Path, reason: str):
        super().__init__(destination, reason + ". If the share is mounted and this is "
                         "really the destination, run `autotx destination init -c CONFIG`")


class DestinationReadOnly(DestinationError):
    """The destination is read-only (a read-only mount or share)."""

    retryable = False
    advice = "make it writable (remount it read-write, or set the share's `read only = no`)"


class DestinationPermission(DestinationError):
    """The agent's user may not write there."""

    retryable = False
    advice = "give the agent's user write permission there"


class DestinationAuth(DestinationError):
    """The server refused the credentials (wrong user name or password, account locked)."""

    retryable = False
    advice = ("check the user name in the destination URL and the password that "
              "password_env or password_file gives")


class DestinationNameTaken(DestinationError):
    """A rename would replace an existing entry; nothing is ever overwritten."""

    retryable = False
    advice = "deliver under a free name (Destination.free_name); nothing was overwritten"


class DestinationLayoutError(DestinationError):
    """The destination cannot be used as laid out (e.g. a user folder on another
    filesystem than the tmp area); it needs an admin, retrying alone will not help."""

    retryable = False


class DestinationFullError(DestinationError):
    """No space left at the destination (``DestinationFull`` is the same class)."""

    advice = "free space at the destination"

    def __init__(self, destination: str | Path, needed: int | None = None):
        detail = "no space left on device"
        if needed is not None:
            detail += f" ({human_bytes(needed)} needed)"
        super().__init__(destination, detail)


DestinationFull = DestinationFullError


class DestinationSettingsError(AutotxError, ValueError):
    """A destination URL or its credentials cannot be used as given (the message says how
    to fix it); never retried."""

    retryable = False


class VerificationError(TransferError):
    """A copied file does not match its source (size or hash)."""

    def __init__(self, path: str | Path, expected: str, actual: str):
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"verification failed for {self.path}: expected {expected}, got {actual}. "
            "The copy is discarded and retried; the source is untouched."
        )


class SourceChangedError(TransferError):
    """A source file kept changing while it was being copied."""

    def __init__(self, path: str | Path, attempts: int):
        self.path = str(path)
        self.attempts = attempts
        super().__init__(
            f"{self.path} changed during {attempts} copy attempts; it is still being written. "
            "The dataset goes back to waiting; raise readiness.quiet_seconds if acquisitions "
            "pause longer than that between writes."
        )


class CopyInterrupted(AutotxError):
    """The agent was asked to stop; files under way were abandoned (copied again later)."""

    def __init__(self) -> None:
        super().__init__("the copy was interrupted by a stop request; verified files are kept "
                         "and the rest is copied when the agent runs again")


class SubmitError(AutotxError):
    """A folder cannot be submitted for transfer."""


class SessionError(AutotxError):
    """An instrument session cannot be started or ended (the message says why)."""


class RequeueError(SubmitError):
    """A dataset cannot be sent back to the queue (not quarantined or unmatched, gone...)."""


# --- the facility hub ---------------------------------------------------------------


class HubError(AutotxError):
    """The hub refused a request or cannot be reached; ``status`` is the HTTP status
    (None when the hub did not answer)."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


# --- imaging -------------------------------------------------------------------------


class ReaderError(AutotxError):
    """A microscopy file cannot be opened or read.

    Carries the file, the backends that were tried and why each failed.
    """

    def __init__(self, path: str | Path, tried: dict[str, str] | None = None, hint: str = ""):
        self.path = str(path)
        self.tried = dict(tried or {})
        reasons = "; ".join(f"{name}: {why}" for name, why in self.tried.items())
        message = f"cannot read {self.path}"
        if reasons:
            message += f" (tried {reasons})"
        if hint:
            message += f". {hint}"
        super().__init__(message)


class MissingDependencyError(AutotxError, ImportError):
    """An optional package is needed for this feature; the message says how to install it."""


class PlateNotFoundError(AutotxError, ValueError):
    """A folder (or file) holds no plate in any layout autotx_lib.imaging.plate recognises.

    Attributes
    ----------
    folder : str
        The folder or plate file that was searched (``path`` is the same value).
    tried : dict of str to str
        Each layout or file-name pattern that was tried, and why it did not match.
    """

    def __init__(self, folder: str | Path, tried: dict[str, str]):
        self.folder = str(folder)
        self.path = self.folder
        self.tried = dict(tried)
        lines = "\n".join(f"  - {name}: {why}" for name, why in self.tried.items())
        super().__init__(
            f"no plate recognised in {self.folder}. Tried:\n{lines}\n"
            "If your instrument names files differently, pass pattern= (or --pattern) with a "
            "regular expression whose named groups give the well (well, or row and col) and "
            r"optionally field, channel, z and t, e.g. r'(?P<well>[A-P]\d{2})_f(?P<field>\d+)'."
        )

    def __reduce__(self):  # picklable (dask ships errors between processes)
        return type(self), (self.folder, self.tried)
