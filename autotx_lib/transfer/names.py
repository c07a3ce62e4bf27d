"""File names a destination can store as they are.

A source on a Linux instrument PC may hold names that a destination would change or refuse:
``A.tif`` beside ``a.tif`` on a share that does not tell letter case apart (one file would
overwrite the other, and both would still "verify", one after the other), or ``x:y.tif`` on
an SMB share (Windows naming rules). Such a dataset is refused before anything is copied.

Examples
--------
>>> case_clashes(["plate/A01.tif", "plate/a01.tif", "plate/b01.tif"])
[('plate/A01.tif', 'plate/a01.tif')]
>>> windows_name_problem("x:y.tif")
"':' is not allowed in a Windows file name"
>>> windows_name_problem("scan.tif") is None
True
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Protocol

from autotx_lib.errors import UnsafePathError

# Characters SMB (MS-FSCC 2.1.5.2) and Windows refuse in a name, besides control characters.
WINDOWS_FORBIDDEN = '"*:<>?\\|'
# Linux's names of file systems that follow Windows' naming rules (``fuseblk``: ntfs-3g).
WINDOWS_FILESYSTEMS = {"cifs", "smb3", "smbfs", "vfat", "msdos", "exfat", "ntfs", "ntfs3",
                       "fuseblk"}
# Names Windows keeps for devices, with or without an extension (``nul.txt`` too).
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                    *(f"LPT{i}" for i in range(1, 10))}


class NamingRules(Protocol):
    """What :func:`check_storable` asks a destination (see ``destinations.base``)."""

    def name_problem(self, name: str) -> str | None: ...

    def case_sensitive(self) -> bool: ...


def check_storable(destination: NamingRules, label: str, dataset: str,
                   relpaths: Sequence[str]) -> None:
    """Refuse a dataset whose names ``destination`` would change or merge.

    Parameters
    ----------
    destination : Destination
        Where the dataset is going (its ``name_problem`` and ``case_sensitive``).
    label : str
        The destination's name, for the message.
    dataset : str
        The dataset's folder name (it is stored too).
    relpaths : sequence of str
        The dataset's files.

    Raises
    ------
    UnsafePathError
        A name the destination refuses, or two names it does not tell apart; the dataset
        is then quarantined untouched (the message names the file and the rule).
    """
    parts = {dataset} | {part for relpath in relpaths for part in relpath.split("/")}
    for part in sorted(parts):
        problem = destination.name_problem(part)
        if problem:
            where = next((r for r in relpaths if part in r.split("/")), "")
            raise UnsafePathError(f"{dataset}/{where}" if where else dataset,
                                  f"{problem}, and destination {label} cannot store it")
    if destination.case_sensitive():
        return
    clashes = case_clashes(relpaths)
    if clashes:
        first, second = clashes[0]
        more = f" ({len(clashes)} such pairs)" if len(clashes) > 1 else ""
        raise UnsafePathError(f"{dataset}/{second}", f"it differs from {first!r} only in letter "
                              f"case{more}, and destination {label} does not tell such names "
                              "apart: one file would overwrite the other")


def _fold(path: str) -> str:
    """What a case- and normalisation-insensitive file system compares (over-cautious:
    ``casefold`` also folds pairs such as ß/ss that NTFS keeps apart)."""
    return unicodedata.normalize("NFC", path).casefold()


def case_clashes(relpaths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of paths (files or their folders) that differ only in letter case or Unicode
    normalisation, which a case-insensitive destination stores as one entry.

    Parameters
    ----------
    relpaths : iterable of str
        ``/``-separated paths of a dataset's files.

    Returns
    -------
    clashes : list of (str, str)
        Each clash once, as (first seen, second), in the order found.
    """
    seen: dict[str, str] = {}
    clashes: dict[tuple[str, str], None] = {}  # ordered, each pair once
    for relpath in relpaths:
        parts = relpath.split("/")
        for end in range(1, len(parts) + 1):
            path = "/".join(parts[:end])
            first = seen.setdefault(_fold(path), path)
            if first != path:
                clashes[first, path] = None
                break  # its folder clashes: the files below it say nothing more
    return list(clashes)


def windows_name_problem(name: str) -> str | None:
    """Why one name (a single path component) cannot be stored on an SMB share or a
    Windows file system, or None when it can.

    Examples
    --------
    >>> windows_name_problem("aux.txt")
    "'AUX' is a device name on Windows"
    """
    for char in name:
        if char in WINDOWS_FORBIDDEN:
            return f"{char!r} is not allowed in a Windows file name"
        if ord(char) < 32:
            return "a control character is not allowed in a Windows file name"
    if name.endswith((".", " ")):
        return "a Windows file name cannot end with a dot or a space (Windows drops it)"
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in WINDOWS_RESERVED:
        return f"{stem!r} is a device name on Windows"
    return None


__all__ = ["WINDOWS_FILESYSTEMS", "WINDOWS_FORBIDDEN", "WINDOWS_RESERVED", "NamingRules", "case_clashes",
           "check_storable", "windows_name_problem"]
