"""Hand a finished folder to the agent (AutoTx tray app's "add new directory").

On the same volume the folder is renamed into ``incoming/<user>/``; from another volume
it is copied (verified) and the original is left where it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from autotx_lib.config import Config
from autotx_lib.errors import SubmitError, UnsafePathError
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.layout import check_name, free_name, fsync_dir, list_dataset


def allowed_roots(config: Config) -> list[Path]:
    """Where folders may be submitted from: ``config.submit_roots``, else incoming's parent.

    Returned with symbolic links resolved, as they are compared with resolved paths.
    """
    roots = config.submit_roots or [config.incoming.parent]
    return [Path(os.path.realpath(r)) for r in roots]


def submit(config: Config, path: str | os.PathLike[str], user: str) -> Path:
    """Put the folder ``path`` into the agent's queue for ``user``.

    Every path is compared with its symbolic links resolved, and the folder that is
    moved is the resolved one: a link in a parent folder cannot smuggle in data from
    outside the allowed roots, a grace original from ``managed/``, a delivered dataset
    from the destination, or another user's folder from ``incoming/``.

    Parameters
    ----------
    config : Config
    path : path-like
        A finished acquisition folder.
    user : str
        Whose data it is (the folder name at the destination).

    Returns
    -------
    queued : Path
        Its new place, ``incoming/<user>/<name>`` (suffixed if the name was taken).

    Raises
    ------
    SubmitError
        The path is not a folder, is a symlink, lies outside the allowed roots, or inside
        the agent's own folders (incoming, managed, destination); or the user name is not
        usable.
    """
    given = Path(os.path.abspath(path))
    try:
        check_name(user)
    except UnsafePathError as error:
        raise SubmitError(f"user name {user!r} cannot be used: {error.reason}") from None
    if given.is_symlink():
        raise SubmitError(f"{given} is a symbolic link; submit the folder it points to")
    if not given.is_dir():
        raise SubmitError(f"{given} is not a folder; submit the acquisition's folder")
    try:
        source = given.resolve(strict=True)  # what is really moved; links in parents resolved
    except (OSError, RuntimeError) as error:  # gone meanwhile, or a loop of links
        raise SubmitError(f"{given} cannot be resolved ({error}); submit a plain folder") from None
    shown = str(given) if source == given else f"{given} (-> {source})"
    _refuse_managed_paths(config, source, shown)
    roots = allowed_roots(config)
    if not any(root == source or root in source.parents for root in roots):
        listed = ", ".join(str(r) for r in roots)
        raise SubmitError(f"{shown} is outside the folders that may be submitted ({listed}); "
                          "move it there first, or add its folder to `submit_roots` in the config")
    target_folder = config.incoming / user
    target_folder.mkdir(parents=True, exist_ok=True)
    target = free_name(target_folder, source.name)
    if os.stat(source).st_dev == os.stat(target_folder).st_dev:
        os.rename(source, target)
        fsync_dir(target_folder)
        return target
    return _copy_in(config, source, target)


def _refuse_managed_paths(config: Config, source: Path, shown: str) -> None:
    """Refuse a (resolved) source that overlaps incoming, managed or the destination."""
    why = {"incoming": "it is in the agent's queue already, or another user's folder",
           "managed": "the agent owns what is there (queued, or an original kept for the "
                      "grace period)",
           "destination": "it has been delivered already"}
    for key in ("incoming", "managed", "destination"):
        folder = Path(os.path.realpath(getattr(config, key)))
        if source == folder or folder in source.parents or source in folder.parents:
            raise SubmitError(f"{shown} overlaps the agent's {key} folder ({folder}): "
                              f"{why[key]}; submit a folder from elsewhere")


def _copy_in(config: Config, source: Path, target: Path) -> Path:
    """Copy across volumes into a hidden staging name, then rename it into place."""
    listing = list_dataset(source)
    staging = target.parent / f".autotx-submit-{target.name}"
    try:
        C.copy_files(listing.files, source, staging, config.verify.algorithm,
                     workers=config.copy_.workers)
        if not listing.files:
            staging.mkdir(parents=True, exist_ok=True)
        C.sync_filesystem(staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    return target


def obstacles(config: Config, user: str, folder: Path | None = None) -> list[str]:
    """What will keep a dataset of ``user`` (in ``folder``) from moving, as things stand.

    Empty when nothing is known to stand in its way. Checks the marker file, the user's
    folder at the destination, and whether the destination is there and marked.

    Examples
    --------
    >>> obstacles(config, "alice", config.incoming / "alice" / "run42")   # doctest: +SKIP
    ['it waits for the marker file acquisition.done, which is not there yet']
    """
    from autotx_lib.transfer.destination import MARKER_NAME, read_marker

    found = []
    marker = config.readiness.marker_file
    if marker and folder is not None and not (folder / marker).is_file():
        found.append(f"it waits for the marker file {marker}, which is not there yet")
    if config.destination is None:
        return found  # an smb:// primary: the agent connects and says what stands in the way
    if not config.destination.is_dir():
        found.append(f"the destination {config.destination} is not reachable (not mounted?); "
                     "it waits until it is")
    elif not (config.destination / user).is_dir() and not config.create_user_dirs:
        found.append(f"there is no folder {user!r} at the destination, so it will go to "
                     "managed/unmatched/; create the folder first")
    elif read_marker(config.destination) is None and any(config.destination.iterdir()):
        found.append(f"the destination has no {MARKER_NAME} marker; if the share is mounted, "
                     "run `autotx destination init`")
    return found
