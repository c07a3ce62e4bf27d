"""Several destinations for one dataset: who takes part in a copy round, and copies written
through the destination protocol.

A dataset goes to every configured destination (:attr:`Config.targets`, the primary
first). The agent copies it in *rounds*: a round takes the destinations that are due
(inside their time windows, not backing off after a failure) and writes every file to all
of them at once: the source is read and hashed once, written to each local folder by
:func:`~autotx_lib.transfer.copy.copy_files`, and to a destination without a local path
(``smb://``) by :func:`replicate_file` in that destination's own thread (:class:`Replicas`),
each copy read back and checked on its own. A
destination that fails during a round leaves it and is tried again later; the others go
on. The journal keeps one delivery row per (dataset, destination).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotx_lib.config import Config, DestinationSettings
from autotx_lib.errors import (
    CopyInterrupted,
    DestinationError,
    SourceChangedError,
    UnreadableFileError,
    VerificationError,
)
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.destinations import Destination, open_destination

CHUNK = 4 * 1024 * 1024  # fewer, larger SMB requests (the transport pipelines them)
PRIMARY_MARKER_SETTING = "destination_id"


def marker_setting(number: int, name: str) -> str:
    """The journal setting that records the marker id of the ``number``-th destination."""
    return PRIMARY_MARKER_SETTING if number == 0 else f"{PRIMARY_MARKER_SETTING}:{name}"


@dataclass
class Member:
    """One destination taking part in a dataset's copy round."""

    delivery: Any  # its journal row
    settings: DestinationSettings
    number: int  # 0: the primary destination
    destination: Destination | None  # None: it could not be opened (e.g. credentials)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def root(self) -> Path | None:
        """The destination's folder on this machine (None: written through the protocol)."""
        return self.settings.local_path

    @property
    def tmp(self) -> Path:
        """A local member's tmp folder for this dataset."""
        return Path(self.delivery.tmp_path)

    def describe(self) -> str:
        return f"{self.name} ({self.destination.url if self.destination else self.settings.url})"


def tmp_location(config: Config, settings: DestinationSettings, user: str, stamped: str) -> str:
    """Where a dataset is assembled at a destination: an absolute path for a local one,
    a path relative to the destination's root for the others."""
    relative = f"{settings.tmp_dir or config.tmp_transfer_dir}/{user}/{stamped}"
    root = settings.local_path
    return str(root / relative) if root is not None else relative


def due_now(settings: DestinationSettings, delivery: Any, now: dt.datetime | None = None) -> str | None:
    """Why this delivery must wait now (its time windows, its back-off), or None."""
    local = (now or dt.datetime.now(dt.UTC)).astimezone()
    if not settings.due(local):
        return f"outside its time windows ({', '.join(settings.time_windows)})"
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > dt.datetime.now(dt.UTC):
        return f"waiting until {delivery.next_attempt_at.astimezone():%H:%M:%S} after: " \
               f"{delivery.error or 'an earlier failure'}"
    return None


def member_for(error: DestinationError, members: Iterable[Member]) -> Member | None:
    """The member a destination error comes from (matched by its path or URL), if any."""
    where = str(error.destination)
    for member in members:
        places = [str(member.tmp)] if member.root is not None else []
        if member.root is not None:
            places.append(str(member.root))
        places.append(member.destination.url)
        if any(place and (where == place or where.startswith(place.rstrip("/") + "/"))
               for place in places):
            return member
    return None


def bandwidth_cap(base: float | None, members: Iterable[Member]) -> float | None:
    """The lowest cap (MB/s) among the agent's own and the round's destinations'."""
    caps = [c for c in [base, *(m.settings.bandwidth_mb_s for m in members)] if c]
    return min(caps) if caps else None


def replicate_file(src: Path, destination: Destination, relpath: str, algorithm: str, *,
                   expected: str | None = None,
                   throttle: Callable[[int], None] | None = None) -> C.CopiedFile:
    """Copy one file to a destination through its protocol, then read it back and check it.

    Parameters
    ----------
    src : Path
        The source file.
    destination : Destination
        Where to write (an SMB share, or any destination).
    relpath : str
        The file's path at the destination.
    algorithm : str
        The hash algorithm.
    expected : str, optional
        The digest the file must have (as verified at another destination, or delivered).
    throttle : callable, optional
        Called with each chunk's size (the gate: pauses, bandwidth cap).

    Raises
    ------
    SourceChangedError
        The source changed while it was read.
    VerificationError
        What was read differs from ``expected``, or the copy read back differs (twice).
    DestinationError
        The destination cannot be written (typed: missing, full, auth ...).
    """
    for attempt in (1, 2):
        before = os.stat(src)
        hasher = C.new_hasher(algorithm)
        with open(src, "rb") as source, destination.open_write(relpath) as out:
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                if throttle is not None:
                    throttle(len(chunk))
        after = os.stat(src)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise SourceChangedError(src, 1)
        digest = hasher.hexdigest()
        if expected is not None and digest != expected:
            raise VerificationError(src, expected, digest)
        stored = hash_at(destination, relpath, algorithm)
        if stored == digest:
            return C.CopiedFile(relpath, after.st_size, after.st_mtime_ns, digest, attempt)
    raise VerificationError(f"{destination.url}/{relpath}", digest, stored)


def copy_between(source: Destination, src: str, destination: Destination, relpath: str,
                 algorithm: str, *, expected: str,
                 throttle: Callable[[int], None] | None = None) -> None:
    """Copy one file from one destination to another, both through their protocol (an
    optional destination catching up from the primary's delivered copy on a share).

    What is read must hash to ``expected`` (the digest delivered); the copy is then read
    back and checked (written twice at most).

    Raises
    ------
    VerificationError
        What was read differs from ``expected`` (the error names the source file), or the
        copy read back differs, twice.
    UnreadableFileError
        The source file is missing.
    DestinationError
        Either destination cannot be read or written (typed: missing, full, auth ...).
    """
    shown = f"{source.url.rstrip('/')}/{src}"
    for _ in (1, 2):
        hasher = C.new_hasher(algorithm)
        try:
            stream = source.open_read(src)
        except FileNotFoundError:
            raise UnreadableFileError(shown, "it is missing from the delivered copy") from None
        with stream, destination.open_write(relpath) as out:
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                if throttle is not None:
                    throttle(len(chunk))
        digest = hasher.hexdigest()
        if digest != expected:
            raise VerificationError(shown, expected, digest)
        stored = hash_at(destination, relpath, algorithm)
        if stored == digest:
            return
    raise VerificationError(f"{destination.url.rstrip('/')}/{relpath}", digest, stored)


def replicate_files(entries: Iterable[Any], source: Path, member: Member, algorithm: str, *,
                    workers: int = 4, throttle: Callable[[int], None] | None = None,
                    should_stop: Callable[[], bool] = lambda: False,
                    tick_seconds: float = 0.5) -> Iterator[C.CopiedFile | None]:
    """Copy files to one protocol destination with ``workers`` files in flight at once
    (each written, read back and checked by :func:`replicate_file`).

    Yields each copied file as it completes, and None about every ``tick_seconds`` while
    none does (for progress). The first error is raised once the files under way are done;
    ``should_stop`` returning True raises CopyInterrupted the same way.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    def one(relpath: str) -> C.CopiedFile:
        copied = replicate_file(source / relpath, member.destination,
                                f"{member.delivery.tmp_path}/{relpath}", algorithm,
                                throttle=throttle)
        return dataclasses.replace(copied, relpath=relpath)  # the dataset's path, not tmp's

    todo = iter(entries)
    error: BaseException | None = None
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix=f"autotx-{member.name}") as pool:
        def submit_next() -> bool:
            entry = next(todo, None)
            if entry is None:
                return False
            pending.add(pool.submit(one, entry.relpath))
            return True

        pending: set[Any] = set()
        while len(pending) < max(1, workers) and submit_next():
            pass
        while pending:
            done, pending = wait(pending, timeout=tick_seconds, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    yield future.result()
                except Exception as failure:  # noqa: BLE001 - raised below, once all settle
                    error = error or failure
                if error is None and should_stop():
                    error = CopyInterrupted()
                if error is None:
                    submit_next()
            if not done:
                yield None
    if error is not None:
        raise error


class Replicas:
    """Write each file verified locally to the round's protocol (``smb://``) destinations,
    in background threads (``workers`` files at once per destination), while the local
    copy goes on.

    A file counts (``on_done``, called in the caller's thread and in order) only once every
    destination holds its checked copy; the first error is raised in the caller's thread by
    the next :meth:`add`, :meth:`collect` or :meth:`finish`. At most ``ahead`` files wait
    for the destinations, so a slow share holds the local copy back rather than memory.

    Examples
    --------
    >>> with Replicas(remote, source, "xxh3_128", on_done=record) as replicas:  # doctest: +SKIP
    ...     copy_files(..., on_file=replicas.add, tick=replicas.collect)
    ...     replicas.finish()
    """

    def __init__(self, members: list[Member], source: Path, algorithm: str,
                 on_done: Callable[[C.CopiedFile], None], *,
                 throttle: Callable[[int], None] | None = None, workers: int = 1,
                 ahead: int = 16):
        from concurrent.futures import ThreadPoolExecutor

        self.members, self.source, self.algorithm = members, source, algorithm
        self.on_done, self.throttle, self.ahead = on_done, throttle, ahead
        self._pools = [ThreadPoolExecutor(max(1, workers), thread_name_prefix=f"autotx-{m.name}")
                       for m in members]
        self._pending: deque[tuple[C.CopiedFile, list[Any]]] = deque()

    def add(self, result: C.CopiedFile) -> None:
        """Start writing one locally verified file to every destination."""
        if not self.members:
            self.on_done(result)
            return
        futures = [pool.submit(replicate_file, self.source / result.relpath, m.destination,
                               f"{m.delivery.tmp_path}/{result.relpath}", self.algorithm,
                               expected=result.digest, throttle=self.throttle)
                   for m, pool in zip(self.members, self._pools, strict=True)]
        self._pending.append((result, futures))
        self.collect(wait=len(self._pending) > self.ahead)

    def collect(self, wait: bool = False) -> None:
        """Hand over the files every destination holds (the oldest first; ``wait``: at
        least the oldest)."""
        while self._pending and (wait or all(f.done() for f in self._pending[0][1])):
            result, futures = self._pending.popleft()
            for future in futures:
                future.result()  # raises the destination's error
            self.on_done(result)
            wait = False

    def finish(self) -> None:
        """Wait until every file is at every destination."""
        while self._pending:
            self.collect(wait=True)

    def close(self) -> None:
        """Drop what has not started, wait for what runs, hand over what is complete."""
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        while self._pending and all(f.done() and not f.cancelled() and f.exception() is None
                                    for f in self._pending[0][1]):
            self.on_done(self._pending.popleft()[0])
        self._pending.clear()

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hash_at(destination: Destination, relpath: str, algorithm: str) -> str:
    """The digest of a file as the destination returns it."""
    hasher = C.new_hasher(algorithm)
    with destination.open_read(relpath) as stream:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def relative_to(member: Member, path: str) -> str:
    """A member's stored path as the protocol wants it (relative to its root)."""
    if member.root is None:
        return path
    return Path(path).relative_to(member.root).as_posix()


def shown_path(member: Member, path: str) -> str:
    """A member's stored path as a person finds it: a folder path, or the URL of a path
    reached through the protocol (``smb://server/share/alice/exp``)."""
    if member.root is not None:
        return path
    return f"{member.destination.url.rstrip('/')}/{path}" if member.destination else path


def open_member_destination(settings: DestinationSettings) -> Destination:
    """The destination object for one configured destination."""
    return open_destination(settings.url, settings.credentials,
                            require_signing=settings.require_signing)


def primary_destination(config: Config) -> Path | Destination:
    """The primary destination: its folder, or (``smb://``) the share opened with its
    credentials (what :func:`~autotx_lib.transfer.destination.init_destination` and
    :func:`~autotx_lib.transfer.destination.read_marker` take)."""
    return config.destination if config.destination is not None else \
        open_member_destination(config.primary)


def backfill(config: Config, journal: Any, name: str, *, since: dt.datetime | None = None,
             dry_run: bool = False) -> list[Any]:
    """Give a destination added to the configuration later the datasets delivered before it.

    Each dataset done without a copy at ``name`` gets a pending delivery there; the agent,
    when idle, copies it as an optional destination catches up (from the original in the
    grace area, else the primary destination's copy), checked against the digests that
    were delivered, and reports each copy. Nothing is copied here, and no destination is
    opened.

    Parameters
    ----------
    config : Config
        The configuration that names the destination (``[[destinations]]``).
    journal : Journal
        The agent's journal.
    name : str
        The destination's ``name``; not the primary (it holds every dataset already).
    since : datetime, optional
        Only datasets finished at or after this time (aware).
    dry_run : bool
        Only say which datasets would be given a delivery.

    Returns
    -------
    datasets : list of Row
        The dataset rows given (or, with ``dry_run``, that would be given) a delivery.

    Raises
    ------
    ValueError
        ``name`` is not a destination of the configuration, or is the primary.

    Examples
    --------
    >>> backfill(config, Journal(config.journal_url), "backup", dry_run=True)  # doctest: +SKIP
    [Row(id=1, user='alice', name='exp', ...), ...]
    """
    targets = {t.name: t for t in config.targets}
    if name not in targets:
        raise ValueError(f"no destination {name!r} in the configuration; its destinations "
                         f"are {', '.join(targets)}")
    if name == config.primary.name:
        raise ValueError(f"{name!r} is the primary destination: every delivered dataset is "
                         "there already; name a [[destinations]] entry after the first")
    chosen = journal.datasets_without(name, since=since)
    if not dry_run:
        for row in chosen:
            journal.ensure_deliveries(row.id, [(name, targets[name].required)])
    return chosen


__all__ = ["Member", "Replicas", "backfill", "bandwidth_cap", "copy_between", "due_now", "hash_at", "marker_setting", "member_for",
           "open_member_destination", "primary_destination", "replicate_file", "replicate_files", "shown_path",
           "tmp_location"]
