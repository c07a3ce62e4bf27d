"""Run the agent as a service: systemd units (Linux), WinSW service files (Windows).

The service runs ``autotx run -c CONFIG`` in the foreground. To stop it, systemd sends
SIGTERM and WinSW sends Ctrl+C: the agent abandons the files under way, keeps what was
verified (recorded in the journal, not copied again) and ends its session cleanly; an
unclean end (power loss, kill) is detected at the next start. A destination share that is
not mounted yet when the service starts does not stop it: the datasets wait for the share.
Only a bad configuration ends ``autotx run`` at once (exit status 2), and the service does
not restart on it in a loop.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path, PureWindowsPath
from xml.sax.saxutils import escape

SYSTEM_UNIT_PATH = Path("/etc/systemd/system/autotx.service")
USER_UNIT_PATH = Path("~/.config/systemd/user/autotx.service")
#: ``autotx run``'s exit status for a bad configuration: restarting cannot help.
BAD_CONFIG_EXIT = 2


def autotx_command() -> list[str]:
    """The ``autotx`` command of this installation, as a list of arguments (absolute paths)."""
    folder = Path(sys.executable).parent
    for name in ("autotx", "autotx.exe"):
        if (folder / name).exists():
            return [str(folder / name)]
    found = shutil.which("autotx")
    return [found] if found else [sys.executable, "-m", "autotx_lib.cli"]


def autotx_executable() -> str:
    """The ``autotx`` command of this installation as one string (for display)."""
    return " ".join(autotx_command())


def systemd_quote(argument: str) -> str:
    """One argument of a systemd ``ExecStart=`` line, quoted when needed.

    systemd splits the line at whitespace, reads double quotes and backslash escapes, and
    expands ``%`` specifiers and ``$`` variables; so ``%`` becomes ``%%``, ``$`` ``$$``, and
    an argument with whitespace, quotes or backslashes is double-quoted.

    Examples
    --------
    >>> systemd_quote("/etc/autotx.toml")
    '/etc/autotx.toml'
    >>> systemd_quote("/srv/my configs/100%.toml")
    '"/srv/my configs/100%%.toml"'
    """
    text = argument.replace("%", "%%").replace("$", "$$")
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
        The ``autotx`` program (one path); default: the one of this installation.

    Examples
    --------
    >>> print(systemd_unit(Path("/etc/autotx.toml"), executable="/opt/autotx/bin/autotx"))
    ... # doctest: +ELLIPSIS
    [Unit]
    Description=autotx transfer agent (microscopy data to central storage)
    ...
    ExecStart=/opt/autotx/bin/autotx run -c /etc/autotx.toml
    ...
    """
    command = [executable] if executable else autotx_command()
    command += ["run", "-c", str(config.expanduser().absolute())]
    lines = [
        "[Unit]",
        "Description=autotx transfer agent (microscopy data to central storage)",
        "After=network-online.target remote-fs.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(systemd_quote(part) for part in command),
        "# an unmounted share does not end `autotx run` (datasets wait for it); only a bad",
        "# configuration does (exit status 2), and restarting cannot fix that",
        "Restart=on-failure",
        "RestartSec=30",
        f"RestartPreventExitStatus={BAD_CONFIG_EXIT}",
        "# SIGTERM: the files under way are abandoned, what was verified is kept (journal)",
        "# and not copied again, and the session ends cleanly; that takes seconds",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=120",
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


def _windows_path(path: str | Path) -> str:
    """``path`` as Windows writes it: a Windows path stays, a POSIX one is made absolute."""
    text = str(path)
    if "\\" in text or re.match(r"^[A-Za-z]:", text):
        return str(PureWindowsPath(text))
    return str(Path(text).expanduser().absolute())


def windows_command(config: str | Path, executable: str | None = None) -> list[str]:
    """The program and arguments a Windows service runs: ``autotx.exe run -c CONFIG``."""
    command = [executable] if executable else autotx_command()
    return command + ["run", "-c", _windows_path(config)]


def winsw_service(config: str | Path, *, executable: str | None = None,
                  service_id: str = "autotx") -> str:
    """A WinSW service file (XML) that runs the agent as a Windows service.

    WinSW (https://github.com/winsw/winsw, one .exe) runs ``autotx run -c CONFIG`` at boot
    (delayed: after the network), at below-normal priority, restarts it after a failure
    (30 s, then 2 and 10 min, so a bad configuration does not loop fast), and stops it with
    Ctrl+C, waiting up to 120 s, as systemd does with SIGTERM. Each argument is its own
    ``<argument>`` element: WinSW quotes them, so paths with spaces need no care.

    Parameters
    ----------
    config : str or Path
        The agent's configuration file; a Windows path (``C:\\...``) is kept as written.
        Name shares by UNC path (``\\\\server\\share``) in it: drive letters mapped at
        logon do not exist for services.
    executable : str, optional
        ``autotx.exe`` of the installation (``...\\.venv\\Scripts\\autotx.exe``);
        default: the one of this installation.
    service_id : str
        The Windows service name.

    Examples
    --------
    >>> xml = winsw_service(r"C:\\Program Data\\autotx.toml",
    ...                     executable=r"C:\\autotx\\.venv\\Scripts\\autotx.exe")
    >>> print(xml.splitlines()[7])
      <argument>C:\\Program Data\\autotx.toml</argument>
    """
    program, *arguments = windows_command(config, executable)
    lines = [
        "<service>",
        f"  <id>{escape(service_id)}</id>",
        "  <name>autotx transfer agent</name>",
        "  <description>Moves microscopy data to central storage, verified.</description>",
        f"  <executable>{escape(program)}</executable>",
        *(f"  <argument>{escape(argument)}</argument>" for argument in arguments),
        "  <startmode>Automatic</startmode>",
        "  <delayedAutoStart>true</delayedAutoStart>",
        "  <priority>belownormal</priority>",
        "  <!-- an unmounted share does not end the agent: datasets wait for it -->",
        '  <onfailure action="restart" delay="30 sec"/>',
        '  <onfailure action="restart" delay="2 min"/>',
        '  <onfailure action="restart" delay="10 min"/>',
        "  <resetfailure>1 hour</resetfailure>",
        "  <!-- Ctrl+C: files under way are abandoned, what was verified is kept -->",
        "  <stoptimeout>120 sec</stoptimeout>",
        '  <log mode="roll-by-size"><sizeThreshold>10240</sizeThreshold>'
        "<keepFiles>8</keepFiles></log>",
        "  <!-- the account must read incoming, write managed and the destination share:",
        "  <serviceaccount><domain>DOMAIN</domain><user>autotx</user><password>...</password>",
        "    <allowservicelogon>true</allowservicelogon></serviceaccount> -->",
        "</service>",
        "",
    ]
    return "\n".join(lines)


def nssm_commands(config: str | Path, *, executable: str | None = None,
                  service_id: str = "autotx") -> list[str]:
    """The same service with NSSM (https://nssm.cc): commands for an administrator's prompt.

    Arguments are quoted as Windows programs read their command line (paths with spaces).
    """
    program, *arguments = windows_command(config, executable)
    quote = subprocess.list2cmdline
    return [
        f"nssm install {service_id} {quote([program])} {quote(arguments)}",
        f"nssm set {service_id} AppPriority BELOW_NORMAL_PRIORITY_CLASS",
        f"nssm set {service_id} AppStopMethodConsole 120000",
        f"nssm set {service_id} AppExit Default Restart",
        f"nssm set {service_id} AppExit {BAD_CONFIG_EXIT} Exit",  # a bad configuration
        f"nssm set {service_id} AppRestartDelay 30000",
        f"nssm set {service_id} Start SERVICE_DELAYED_AUTO_START",
        f"nssm start {service_id}",
    ]


def windows_install_hint(service_id: str = "autotx") -> str:
    """What to do with the WinSW file."""
    return (f"save it as {service_id}-service.xml beside WinSW-x64.exe renamed to "
            f"{service_id}-service.exe, then, as administrator: {service_id}-service.exe "
            f"install && {service_id}-service.exe start (logs beside it). Or use NSSM: "
            "autotx service install --print --nssm")
