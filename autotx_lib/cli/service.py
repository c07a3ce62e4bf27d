"""``autotx service install``: a systemd unit (Linux) or a WinSW/NSSM service (Windows)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import ConfigOption, ExitCode, err, fail, handle_errors, out
from autotx_lib.config import load_config
from autotx_lib.transfer.service import (
    SYSTEM_UNIT_PATH,
    USER_UNIT_PATH,
    install_hint,
    nssm_commands,
    systemd_unit,
    windows_install_hint,
    winsw_service,
)

service_app = typer.Typer(help="Run the agent as a service (systemd; WinSW or NSSM on "
                          "Windows).", no_args_is_help=True)


@service_app.command("install")
def install(
    config: ConfigOption,
    print_only: Annotated[bool, typer.Option("--print", help="Print the unit instead of "
                                             "writing it.")] = False,
    user_level: Annotated[bool, typer.Option("--user", help="A per-user unit "
                                             "(systemctl --user), no root needed.")] = False,
    run_as: Annotated[str | None, typer.Option("--run-as", help="Account for a system "
                                               "unit.")] = None,
    windows: Annotated[bool, typer.Option("--windows", help="Print a WinSW service file "
                                          "(the default on Windows).")] = False,
    nssm: Annotated[bool, typer.Option("--nssm", help="Print NSSM commands instead (Windows).")
                    ] = False,
    executable: Annotated[str | None, typer.Option(
        "--executable", help="The autotx program the service runs (default: this one).")
    ] = None,
) -> None:
    """Write (or with --print, show) a service running `autotx run -c CONFIG`.

    On Linux a systemd unit; with --windows (the default on Windows) a WinSW service file,
    with --nssm the NSSM commands, both printed. The configuration is checked first. Exit
    status: 0 written or printed; 2 bad configuration, or the unit file cannot be written
    (run with --print and save it by hand).
    """
    handle_errors(load_config)(config)  # a bad config never becomes a service
    if nssm:
        out.print("\n".join(nssm_commands(config, executable=executable)), markup=False,
                  highlight=False, soft_wrap=True)
        err.print("run these in an administrator's prompt (nssm.exe on the PATH)", markup=False)
        return
    if windows or os.name == "nt":
        out.print(winsw_service(config, executable=executable), markup=False, highlight=False,
                  soft_wrap=True)
        err.print(windows_install_hint(), markup=False, soft_wrap=True)
        return
    unit = systemd_unit(Path(config), user_level=user_level, run_as=run_as,
                        executable=executable)
    if print_only:
        out.print(unit, markup=False, highlight=False, soft_wrap=True)
        err.print(install_hint(user_level), markup=False, soft_wrap=True)
        return
    path = (USER_UNIT_PATH if user_level else SYSTEM_UNIT_PATH).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(unit)
    except OSError as error:
        raise fail(f"cannot write {path}: {error.strerror or error}. Run "
                   "`autotx service install --print` and save the unit by hand.") from None
    out.print(f"wrote {path}", markup=False)
    ctl = "systemctl --user" if user_level else "systemctl"
    err.print(f"next: {ctl} daemon-reload && {ctl} enable --now autotx", markup=False)
    raise typer.Exit(int(ExitCode.OK))
