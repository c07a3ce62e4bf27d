"""Send a quarantined or unmatched dataset back to the queue, once its cause is fixed.

The folder moves from ``managed/error/`` or ``managed/unmatched/`` back to
``incoming/<user>/<dataset>`` (a rename: same volume, nothing copied, nothing deleted),
where the agent claims it like any new acquisition. The journal keeps the old record,
noting where it went; the quarantine's ``.reason.txt`` stays beside where it was.

Examples
--------
>>> requeue(config, 17)                                    # doctest: +SKIP
Requeued(dataset_id=17, source=..., target=PosixPath('/data/incoming/alice/run42'), ...)
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.errors import RequeueError
from autotx_lib.journal import Journal, utcnow
from autotx_lib.transfer.layout import (
    ManagedFolders,
    check_name,
    free_name,
    fsync_dir,
    parse_stamped,
)
from autotx_lib.transfer.submit import obstacles


@dataclass(frozen=True)
class Requeued:
    """What :func:`requeue` did, and what may still keep the dataset from moving."""

    dataset_id: int | None
    source: Path
    target: Path
    warnings: list[str] = field(default_factory=list)


def _find(config: Config, journal: Journal, target: int | str | Path):
    """(journal row or None, folder, user, name) for a dataset id or a folder path."""
    folders = ManagedFolders(config.managed)
    if isinstance(target, int) or str(target).isdigit():
        row = journal.dataset(int(target))  # JournalError names a missing id
        if row.state not in (J.ERROR, J.UNMATCHED) or not row.final_path:
            raise RequeueError(f"dataset {row.id} ({row.user}/{row.name}) is {row.state}: only "
                               "quarantined (error) and unmatched datasets can be requeued")
        return row, Path(row.final_path), row.user, row.name
    folder = Path(os.path.realpath(target))
    allowed = [Path(os.path.realpath(folders.error)), Path(os.path.realpath(folders.unmatched))]
    if folder.parent.parent not in allowed:
        raise RequeueError(f"{target} is not a dataset folder in {folders.error}/<user>/ or "
                           f"{folders.unmatched}/<user>/; give its path there or its id")
    rows = [r for r in journal.all_datasets() if r.final_path and
            os.path.realpath(r.final_path) == str(folder)]
    if rows:
        return rows[0], folder, rows[0].user, rows[0].name
    stamp, sep, rest = folder.name.partition("__")  # <stamp>__<dataset>
    parsed = parse_stamped(f"{stamp}__{folder.parent.name}__{rest}") if sep else (None,) * 3
    return None, folder, folder.parent.name, parsed[2] or folder.name


def requeue(config: Config, target: int | str | Path, *,
            journal: Journal | None = None) -> Requeued:
    """Move a quarantined or unmatched dataset back to ``incoming/<user>/``.

    Parameters
    ----------
    config : Config
    target : int, str or Path
        The dataset's id (``autotx status`` shows it), or its folder in ``managed/error/``
        or ``managed/unmatched/``.
    journal : Journal, optional
        Defaults to the config's.

    Returns
    -------
    requeued : Requeued
        ``warnings`` says what may still stop it (e.g. still no user folder).

    Raises
    ------
    RequeueError
        Not a quarantined or unmatched dataset, its folder is gone, or it cannot be moved.
    """
    own = journal is None
    journal = journal or Journal(config.journal_url)
    try:
        row, folder, user, name = _find(config, journal, target)
        if not folder.is_dir():
            raise RequeueError(f"{folder} is gone (requeued before, or moved by hand)")
        check_name(user, config.incoming)
        destination = free_name(config.incoming / user, name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, destination)
        except OSError as error:
            hint = (" (managed/ and incoming/ are on different filesystems: move it by hand "
                    "or with `autotx submit`)" if error.errno == errno.EXDEV else "")
            raise RequeueError(f"cannot move {folder} to {destination}: "
                               f"{error.strerror}{hint}") from None
        fsync_dir(destination.parent)
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        note = f"requeued by {who}: moved back to {destination}"
        if row is not None:
            journal.update_dataset(row.id, final_path=str(destination),
                                   error=f"{note} (was: {row.error or row.state})",
                                   finished_at=row.finished_at or utcnow())
        journal.log("info", "requeued", f"{user}/{name}: {note}", row.id if row else None)
        return Requeued(row.id if row else None, folder, destination,
                        obstacles(config, user, destination))
    finally:
        if own:
            journal.close()


__all__ = ["Requeued", "requeue"]
