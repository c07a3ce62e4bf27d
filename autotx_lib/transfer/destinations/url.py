"""Open a destination from what a configuration says: a folder, ``file://`` or ``smb://``.

Forms
-----
``/mnt/storage`` or ``file:///mnt/storage``
    A local folder (or a share the system mounted there).
``smb://[user@]server[:port]/share[/path]``
    A folder on an SMB share, written directly (no mount). ``DOMAIN;user@`` gives a
    domain user. AutoTx's UNC destination ``\\\\server\\share\\path`` maps to it
    (:func:`parse_unc`).

The password never appears in the URL or the configuration: ``password_env`` names an
environment variable holding it, or ``password_file`` a file only the agent's user may
read (``chmod 600``). It is never logged or shown.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from autotx_lib.errors import DestinationSettingsError
from autotx_lib.transfer.destinations.base import Destination
from autotx_lib.transfer.destinations.local import LocalDestination

FORMS = "a folder path, file:///path or smb://[user@]server[:port]/share/path"


@dataclass(frozen=True)
class Credentials:
    """Where an SMB destination's password comes from (never the password itself).

    Parameters
    ----------
    username : str, optional
        The user, when the URL names none (``DOMAIN\\user`` for a domain user).
    password_env : str, optional
        The name of an environment variable holding the password (tried first).
    password_file : Path, optional
        A file holding the password; refused when group or others may read it.
    """

    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | Credentials | None) -> Credentials:
        """Credentials from a config section (``password`` itself is refused)."""
        if isinstance(data, Credentials):
            return data
        data = dict(data or {})
        if "password" in data:
            raise DestinationSettingsError(
                "the destination password is never written in the configuration: remove "
                "`password` and set password_env (an environment variable's name) or "
                "password_file (a file readable only by the agent's user)")
        unknown = sorted(set(data) - {"username", "password_env", "password_file"})
        if unknown:
            raise DestinationSettingsError(f"unknown destination credential setting(s) "
                                           f"{unknown}: use username, password_env, "
                                           "password_file")
        file = data.get("password_file")
        return cls(data.get("username"), data.get("password_env"),
                   Path(file).expanduser() if file else None)


def read_password(credentials: Credentials, environ: Mapping[str, str] | None = None) -> str:
    """The password that ``credentials`` point to.

    Raises
    ------
    DestinationSettingsError
        None is given, the variable is unset, the file is missing or others may read it.
    """
    environ = os.environ if environ is None else environ
    if credentials.password_env:
        if environ.get(credentials.password_env):
            return environ[credentials.password_env]
        if not credentials.password_file:
            raise DestinationSettingsError(
                f"the environment variable {credentials.password_env} (password_env) is not "
                "set: set it in the agent's environment (e.g. the service's Environment=)")
    path = credentials.password_file
    if not path:
        raise DestinationSettingsError(
            "the SMB destination needs a password: set password_env (an environment "
            "variable's name) or password_file (a file readable only by the agent's user)")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            raise DestinationSettingsError(
                f"the password file {path} may be read or changed by other users (mode "
                f"{mode:04o}): run `chmod 600 {path}`")
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as error:
        raise DestinationSettingsError(f"cannot read the password file {path} "
                                       f"({error.strerror}): check password_file and that "
                                       "the agent's user may read it") from None
    if not password:
        raise DestinationSettingsError(f"the password file {path} is empty: write the "
                                       "password in it")
    return password


def parse_unc(unc: str) -> str:
    r"""An smb:// URL for a UNC path, e.g. AutoTx's destination.

    Examples
    --------
    >>> parse_unc(r"\\fileserver\microscopy\incoming data")
    'smb://fileserver/microscopy/incoming data'
    """
    parts = [p for p in unc.replace("/", "\\").split("\\") if p]
    if not unc.startswith(("\\\\", "//")) or len(parts) < 2:
        raise DestinationSettingsError(f"{unc!r} is not a UNC path with a share: write "
                                       r"\\server\share\folder")
    return "smb://" + "/".join(parts)


def open_destination(url: str | os.PathLike | Destination,
                     credentials: Mapping[str, Any] | Credentials | None = None, *,
                     environ: Mapping[str, str] | None = None, timeout: float = 30.0,
                     require_signing: bool = False) -> Destination:
    """The destination a URL or path names (see the module doc for the forms).

    Parameters
    ----------
    url : str, Path or Destination
        A folder path, ``file://`` URL, ``smb://`` URL or UNC path (a Destination is
        returned as is).
    credentials : Credentials or mapping, optional
        ``username``, ``password_env``, ``password_file`` (SMB only).
    environ : mapping, optional
        Where ``password_env`` is looked up (default ``os.environ``).
    timeout : float
        Seconds to wait for an SMB server to answer a connection.
    require_signing : bool
        SMB: sign every message, file data included. By default the file data is signed
        only when the server requires it (as Windows' and Samba's clients do); every copy
        is read back and hashed all the same.

    Returns
    -------
    destination : Destination

    Raises
    ------
    DestinationSettingsError
        Unknown scheme, no share, a password in the URL, missing or exposed credentials.
    """
    if isinstance(url, Destination):
        return url
    if isinstance(url, os.PathLike):
        return LocalDestination(Path(url))
    text = check_url(str(url))
    folder = local_path_of(text)
    if folder is not None:
        return LocalDestination(folder)
    return _open_smb(text, Credentials.from_mapping(credentials), environ, timeout,
                     require_signing)


def check_url(url: str) -> str:
    """A destination URL checked for its form, without connecting or reading a password.

    Returns the URL as given, a UNC path turned into ``smb://``. Raises
    :class:`DestinationSettingsError` (a ValueError) for an unknown scheme, an SMB URL
    without server or share, or with a password in it.

    Examples
    --------
    >>> check_url(r"\\\\nas\\imaging\\lsm880")
    'smb://nas/imaging/lsm880'
    >>> check_url("ftp://nas/x")
    Traceback (most recent call last):
    ...
    autotx_lib.errors.DestinationSettingsError: unknown scheme 'ftp' in destination 'ftp://nas/x': use a folder path, file:///path or smb://[user@]server[:port]/share/path
    """
    text = str(url).strip()
    if text.startswith(("\\\\", "//")):
        return parse_unc(text)
    local_path_of(text)
    if urlsplit(text).scheme.lower() == "smb":
        _smb_parts(text)
    return text


def local_path_of(url: str) -> Path | None:
    """The folder a destination URL names on this machine; None for ``smb://``.

    Raises DestinationSettingsError for a scheme that is neither.
    """
    text = str(url).strip()
    if text.startswith(("\\\\", "//")):
        return None
    if "://" not in text:
        return Path(text).expanduser()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DestinationSettingsError(f"{text!r}: a file:// URL names a folder on this "
                                           "machine (file:///path); for a server use smb://")
        return Path(unquote(parts.path))
    if scheme != "smb":
        raise DestinationSettingsError(f"unknown scheme {parts.scheme!r} in destination "
                                       f"{_shown(text)!r}: use {FORMS}")
    return None


def _smb_parts(text: str) -> tuple[str, int, str, str, str | None]:
    """(server, port, share, path, user or None) of an ``smb://`` URL, checked."""
    parts = urlsplit(text)
    if parts.password is not None:
        raise DestinationSettingsError(
            f"{_shown(text)!r}: never put the password in the URL; write "
            "smb://user@server/share/path and set password_env or password_file")
    if not parts.hostname:
        raise DestinationSettingsError(f"{text!r} names no server: use "
                                       "smb://[user@]server[:port]/share/path")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise DestinationSettingsError(f"{text!r} names no share: use "
                                       "smb://[user@]server[:port]/share/path")
    try:
        port = parts.port or 445
    except ValueError:
        raise DestinationSettingsError(f"{text!r}: the port is not a number") from None
    user = unquote(parts.username).replace(";", "\\") if parts.username else None
    return parts.hostname, port, segments[0], "/".join(segments[1:]), user


def _shown(text: str) -> str:
    """A URL fit to print: whatever follows ``user:`` before ``@`` is hidden."""
    parts = urlsplit(text)
    if parts.password is None:
        return text
    return text.replace(f":{parts.password}@", ":***@", 1)


def _open_smb(text: str, credentials: Credentials, environ: Mapping[str, str] | None,
              timeout: float, require_signing: bool = False) -> Destination:
    server, port, share, path, user = _smb_parts(text)
    username = user or credentials.username
    if not username:
        raise DestinationSettingsError(f"{text!r} names no user: write "
                                       "smb://USER@server/share/path (or give username)")
    from autotx_lib.transfer.destinations.smb import SMBDestination

    return SMBDestination(server, share, path, username=username,
                          password=read_password(credentials, environ), port=port,
                          timeout=timeout, require_signing=require_signing)


__all__ = ["Credentials", "check_url", "local_path_of", "open_destination", "parse_unc",
           "read_password"]
