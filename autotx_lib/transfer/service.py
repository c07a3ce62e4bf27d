"""Run the agent as a service: systemd units (system-wide, or per user).

The unit runs ``autotx run -c CONFIG`` in the foreground; systemd stops it with SIGTERM,
on which the agent lets the files under way finish, records them in the journal and
ends its session cleanly (an unclean end is detected at the next start).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

SYSTEM_UNIT_PATH = Path("/etc/systemd/system/autotx.service")
USER_UNIT_PATH = Path("~/.config/systemd/user/autotx.service")


def autotx_executable() -> str:
    """The ``autotx`` command of this installation (absolute path)."""
    beside_python = Path(sys.executable).parent / "autotx"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("autotx") or f"{sys.executable} -m autotx_lib.cli"


def systemd_unit(config: Path, *, user_level: bool = False, run_as: str | None = None,
                 executable: str | None = None) -> str:
    """The text of a systemd unit that runs the agent with ``config``.

    Parameters
    ----------
    config : Path
        The agent's configuration file (made absolute).
    user_level : bool
        A ``systemctl --user`` unit (no root needed; runs while the user is logged in,
        or always with ``loginctl enable-linger``).
    run_as : str, optional
        For a system unit: the account to run as (it must read incoming/ and write
        managed/ and the destination).
    executable : str, optional
        The ``autotx`` command; default: the one of this installation.

    Examples
    --------
    >>> print(systemd_unit(Path("/etc/autotx.toml"), executable="/opt/autotx/bin/autotx"))
    ... # doctest: +ELLIPSIS
    [Unit]
    Description=autotx transfer agent (microscopy data to central storage)
    ...
    """
    command = executable or autotx_executable()
    lines = [
        "[Unit]",
        "Description=autotx transfer agent (microscopy data to central storage)",
        "After=network-online.target remote-fs.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={command} run -c {config.expanduser().absolute()}",
        "Restart=on-failure",
        "RestartSec=30",
        "# SIGTERM: files under way finish and are recorded; allow time for a large file",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=300",
        "# be gentle with the instrument: lowest CPU and I/O priority",
        "Nice=10",
        "IOSchedulingClass=idle",
    ]
    if run_as and not user_level:
        lines.append(f"User={run_as}")
    lines += ["", "[Install]", f"WantedBy={'default.target' if user_level else 'multi-user.target'}",
              ""]
    return "\n".join(lines)


def install_hint(user_level: bool) -> str:
    """What to run after writing the unit file."""
    path = USER_UNIT_PATH if user_level else SYSTEM_UNIT_PATH
    ctl = "systemctl --user" if user_level else "systemctl"
    return (f"save it as {path}, then: {ctl} daemon-reload && {ctl} enable --now autotx; "
            f"logs: journalctl {'--user ' if user_level else ''}-u autotx")
