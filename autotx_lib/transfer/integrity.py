"""Compare a dataset's files with what the journal recorded when it was delivered.

The journal's file rows (relpath, size, mtime, digest) are the reference; the manifest,
the original in the grace area and the delivered copy are checked against them. Each
function returns one line per disagreement, naming the file and why (empty: agrees).
Used by ``autotx grace purge`` (before an original is removed) and ``autotx verify``
(bit rot, tampering or deletion at the destination).
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autotx_lib.transfer.copy import hash_file, read_manifest

# Why a file that is not in the journal matters, per side.
EXTRA = {"original": "never delivered", "delivered copy": "added after delivery"}
# Why a file whose fresh hash differs from the journal's matters, per side.
HASH_DIFFERS = {"original": "changed since it was copied",
                "delivered copy": "changed or damaged since delivery"}


def journal_disagreements(rows: Sequence[Any]) -> list[str]:
    """The journal's file rows must all carry the digest of a verified copy."""
    if not rows:
        return ["the journal lists no files for this dataset, so there is nothing to compare"]
    return [f"{row.relpath}: the journal has no digest for it (never verified)"
            for row in rows if not row.digest or not row.verified]


def manifest_disagreements(manifest: Path, rows: Sequence[Any], algorithm: str,
                           manifest_digest: str | None = None) -> list[str]:
    """The manifest must be the one delivered and list exactly the journal's digests."""
    try:
        listed = dict(read_manifest(manifest))
        digest = hash_file(manifest, algorithm)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return [f"the manifest {manifest} cannot be read ({error})"]
    reasons = []
    if manifest_digest and digest != manifest_digest:
        reasons.append(f"the manifest {manifest.name} changed since delivery (its digest "
                       "differs from the journal's)")
    for row in rows:
        if row.relpath not in listed:
            reasons.append(f"{row.relpath} is in the journal but not in the delivered copy's "
                           "manifest")
        elif listed.pop(row.relpath) != row.digest:
            reasons.append(f"{row.relpath}: the manifest's digest differs from the journal's "
                           "(the manifest was rewritten)")
    reasons += [f"{relpath} is in the delivered copy's manifest but not in the journal"
                for relpath in sorted(listed)]
    return reasons


def _listing(folder: Path, skip: str | None = None) -> dict[str, os.stat_result]:
    """Everything but directories below ``folder``, by relpath; symlinks not followed."""
    found: dict[str, os.stat_result] = {}
    stack = [""]
    while stack:
        prefix = stack.pop()
        with os.scandir(folder / prefix if prefix else folder) as entries:
            for item in entries:
                relpath = f"{prefix}/{item.name}" if prefix else item.name
                info = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    stack.append(relpath)
                elif relpath != skip:
                    found[relpath] = info
    return found


def _when(ns: int) -> str:
    seconds, rest = divmod(ns, 10**9)
    return f"{dt.datetime.fromtimestamp(seconds):%Y-%m-%d %H:%M:%S}.{rest:09d}"


def listing_disagreements(folder: Path, rows: Sequence[Any], side: str, *, mtimes: bool,
                          skip: str | None = None) -> list[str]:
    """The files of one side (``original`` or ``delivered copy``) against the journal's
    rows: names, sizes, and modification times if asked."""
    try:
        found = _listing(folder, skip)
    except OSError as error:
        return [f"the {side} {folder} cannot be listed ({error})"]
    reasons = []
    for row in rows:
        info = found.pop(row.relpath, None)
        changed = f"{row.relpath} in the {side} changed since it was copied"
        if info is None:
            reasons.append(f"{row.relpath} is missing from the {side}")
        elif not stat.S_ISREG(info.st_mode):
            reasons.append(f"{row.relpath} in the {side} is no longer a regular file")
        elif info.st_size != row.size:
            reasons.append(f"{changed} (size {row.size} -> {info.st_size} bytes)")
        elif mtimes and info.st_mtime_ns != row.mtime_ns:
            reasons.append(f"{changed} (modified {_when(row.mtime_ns)} -> "
                           f"{_when(info.st_mtime_ns)})")
    reasons += [f"{relpath} in the {side} is not in the journal ({EXTRA[side]})"
                for relpath in sorted(found)]
    return reasons


def hash_disagreements(folder: Path, rows: Sequence[Any], side: str, algorithm: str,
                       on_file: Callable[[Any], None] | None = None) -> list[str]:
    """Hash every journal file below ``folder``; each must equal the journal's digest.

    ``on_file`` receives each row once its file was hashed (progress).
    """
    reasons = []
    for row in rows:
        try:
            if hash_file(folder / row.relpath, algorithm) != row.digest:
                reasons.append(f"{row.relpath} in the {side} differs from the journal's "
                               f"digest ({HASH_DIFFERS[side]})")
        except OSError as error:
            reasons.append(f"{row.relpath} in the {side} cannot be read to hash it "
                           f"({error.strerror or error})")
        if on_file is not None:
            on_file(row)
    return reasons


__all__ = ["hash_disagreements", "journal_disagreements", "listing_disagreements",
           "manifest_disagreements"]
