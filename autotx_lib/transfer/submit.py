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
    """Where folders may be submitted from: ``config.submit_roots``, else incoming's parent."""
    roots = config.submit_roots or [config.incoming.parent]
    return [Path(os.path.abspath(r)) for r in roots]


def submit(config: Config, path: str | os.PathLike[str], user: str) -> Path:
    """Put the folder ``path`` into the agent's queue for ``user``.

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
        the agent's own folders; or the user name is not usable.
    """
    source = Path(os.path.abspath(path))
    try:
        check_name(user)
    except UnsafePathError as error:
        raise SubmitError(f"user name {user!r} cannot be used: {error.reason}") from None
    if source.is_symlink():
        raise SubmitError(f"{source} is a symbolic link; submit the folder it points to")
    if not source.is_dir():
        raise SubmitError(f"{source} is not a folder; submit the acquisition's folder")
    _refuse_managed_paths(config, source)
    roots = allowed_roots(config)
    if not any(root == source or root in source.parents for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise SubmitError(f"{source} is outside the folders that may be submitted ({shown}); "
                          "move it there first, or add its folder to `submit_roots` in the config")
    target_folder = config.incoming / user
    target_folder.mkdir(parents=True, exist_ok=True)
    target = free_name(target_folder, source.name)
    if os.stat(source).st_dev == os.stat(target_folder).st_dev:
        os.rename(source, target)
        fsync_dir(target_folder)
        return target
    return _copy_in(config, source, target)


def _refuse_managed_paths(config: Config, source: Path) -> None:
    for key in ("incoming", "managed", "destination"):
        folder = Path(os.path.abspath(getattr(config, key)))
        if source == folder or folder in source.parents or source in folder.parents:
            raise SubmitError(f"{source} overlaps the agent's {key} folder ({folder}); "
                              "submit a folder from elsewhere")


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
