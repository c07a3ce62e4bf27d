"""Read AutoTx's XML configuration (``config.common.xml`` plus ``<hostname>.xml``).

AutoTx layers a host file over a common file: every element of the host file wins,
the common file fills in the rest. This module does the same and maps each AutoTx key
to its equivalent here; keys without an equivalent are reported, never silently dropped.
"""

from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from autotx_lib.errors import ConfigError, ConfigProblem

COMMON_FILE = "config.common.xml"

# AutoTx key -> (our dotted key, converter)
_SIMPLE: dict[str, tuple[str, Any]] = {
    "HostAlias": ("host_alias", str),
    "DestinationAlias": ("destination_alias", str),
    "TmpTransferDir": ("tmp_transfer_dir", str),
    "ServiceTimer": ("poll_seconds", lambda v: int(v) / 1000.0),
    "MaxCpuUsage": ("gate.max_cpu_percent", float),
    "MinAvailableMemory": ("gate.min_available_memory_mb", int),
    "MarkerFile": ("readiness.marker_file", str),
    "SmtpHost": ("email.smtp_host", str),
    "SmtpPort": ("email.smtp_port", int),
    "SmtpUserCredential": ("email.user", str),
    "SmtpPasswortCredential": ("email.password", str),
    "EmailFrom": ("email.sender", str),
    "EmailPrefix": ("email.subject_prefix", str),
    "AdminEmailAdress": ("email.admin", str),
    "AdminDebugEmailAdress": ("email.admin_debug", str),
    "SendTransferNotification": ("email.send_transfer_notification", lambda v: _bool(v)),
    "SendAdminNotification": ("email.send_admin_notification", lambda v: _bool(v)),
    "AdminNotificationDelta": ("email.admin_notification_delta_minutes", int),
    "GraceNotificationDelta": ("email.grace_notification_delta_minutes", int),
    "StorageNotificationDelta": ("email.storage_notification_delta_minutes", int),
    "GracePeriod": ("grace_period_days", int),
    "Debug": ("log_level", lambda v: "DEBUG" if _bool(v) else "INFO"),
}
_PATHS = {"SourceDrive", "IncomingDirectory", "ManagedDirectory", "DestinationDirectory"}
_LISTS = {"BlacklistedProcesses", "SpaceMonitoring"}

# read, but into a different form; the admin is told what to add
CONVERTED_KEYS = {"DestinationDirectory"}

IGNORED_KEYS = {
    "EnforceInheritedACLs": "Windows ACL inheritance has no equivalent here; files get the "
                            "destination folder's default permissions",
    "InterPacketGap": "RoboCopy's packet gap; use gate.bandwidth_mb_s for a bandwidth cap",
    "DebugRoboSharpMessages": "RoboCopy logging; there is no RoboCopy here",
}


def _bool(value: str) -> bool:
    return value.strip().lower() in {"true", "1", "yes"}


def _autotx_path(value: str) -> str:
    from autotx_lib.config import autotx_path

    return autotx_path(value)


def _files_for(path: Path) -> list[Path]:
    """Host file first, then the common file (first occurrence wins, as in AutoTx)."""
    if path.is_dir():
        host = path / f"{socket.gethostname()}.xml"
        common = path / COMMON_FILE
        return [f for f in (host, common) if f.exists()]
    common = path.parent / COMMON_FILE
    if path.name != COMMON_FILE and common.exists():
        return [path, common]
    return [path]


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        data = data.setdefault(parent, {})
    data[leaf] = value


def read_autotx_xml(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Map AutoTx XML configuration into a dict for :func:`autotx_lib.config.config_from_dict`.

    Parameters
    ----------
    path : path-like
        A folder with ``config.common.xml`` (and ``<hostname>.xml``), or one XML file
        (layered over ``config.common.xml`` beside it when there is one).

    Returns
    -------
    data : dict
        Keys and values in this project's configuration form.
    ignored : dict
        AutoTx keys that were present but have no equivalent, with the reason.

    Raises
    ------
    ConfigError
        When no file is found, an XML file is malformed, or a value cannot be converted.
    """
    path = Path(path)
    files = _files_for(path)
    if not files:
        raise ConfigError(path, [ConfigProblem("(file)", f"no {COMMON_FILE} or "
                                               f"{socket.gethostname()}.xml in this folder",
                                               "point at an AutoTx configuration folder")])
    seen: dict[str, ET.Element] = {}
    for file in files:
        try:
            root = ET.parse(file).getroot()
        except ET.ParseError as error:
            raise ConfigError(file, [ConfigProblem("(syntax)", str(error),
                                                   "fix the XML at that line")]) from None
        for element in root:
            seen.setdefault(element.tag, element)
    return _map_elements(path, seen)


def _map_elements(source: Path, seen: dict[str, ET.Element]) -> tuple[dict, dict[str, str]]:
    data: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    text = {tag: (el.text or "").strip() for tag, el in seen.items()}
    for tag, element in seen.items():
        if tag in _SIMPLE:
            if not text[tag]:
                continue
            key, convert = _SIMPLE[tag]
            try:
                _set(data, key, convert(text[tag]))
            except ValueError:
                problems.append(ConfigProblem(tag, f"cannot read {text[tag]!r}",
                                              "give a number"))
        elif tag == "BlacklistedProcesses":
            names = [(c.text or "").strip() for c in element if (c.text or "").strip()]
            _set(data, "gate.blacklisted_processes", names)
        elif tag == "SpaceMonitoring":
            checks = []
            for drive in element:
                name = (drive.findtext("DriveName") or "").strip()
                threshold = (drive.findtext("SpaceThreshold") or "0").strip()
                checks.append({"path": _autotx_path(name), "min_free_mb": int(threshold)})
            data["space_monitoring"] = checks
        elif tag in IGNORED_KEYS:
            ignored[tag] = IGNORED_KEYS[tag]
        elif tag not in _PATHS:
            ignored[tag] = "not an AutoTx key known to autotx_lib"
    drive = text.get("SourceDrive", "")
    for tag, key in (("IncomingDirectory", "incoming"), ("ManagedDirectory", "managed")):
        if text.get(tag):
            data[key] = _autotx_path(_join(drive, text[tag]))
    if text.get("DestinationDirectory"):
        _destination(data, ignored, text["DestinationDirectory"])
    if problems:
        raise ConfigError(source, problems)
    return data, ignored


def _destination(data: dict[str, Any], ignored: dict[str, str], value: str) -> None:
    """AutoTx's destination: a UNC path becomes an smb:// destination off Windows (where
    the service reached it through the OS), anything else a folder."""
    if value.startswith(("\\\\", "//")) and os.name != "nt":
        from autotx_lib.transfer.destinations.url import parse_unc

        data["destinations"] = [{"name": "storage", "url": parse_unc(value)}]
        ignored["DestinationDirectory"] = (
            f"became [[destinations]] url = \"{data['destinations'][0]['url']}\"; add "
            "username and password_env (or password_file) to that entry")
    else:
        data["destination"] = _autotx_path(value)


def _join(drive: str, folder: str) -> str:
    if not drive:
        return folder
    separator = "" if drive.endswith(("\\", "/")) else "\\"
    return f"{drive}{separator}{folder}"
