"""``autotx service install``: a systemd unit that runs the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import ConfigOption, ExitCode, err, fail, handle_errors, out
from autotx_lib.config import load_config
from autotx_lib.transfer.service import (
    SYSTEM_UNIT_PATH,
    USER_UNIT_PATH,
    install_hint,
    systemd_unit,
)

service_app = typer.Typer(help="Run the agent as a service (systemd).", no_args_is_help=True)


@service_app.command("install")
def install(
    config: ConfigOption,
    print_only: Annotated[bool, typer.Option("--print", help="Print the unit instead of "
                                             "writing it.")] = False,
    user_level: Annotated[bool, typer.Option("--user", help="A per-user unit "
                                             "(systemctl --user), no root needed.")] = False,
    run_as: Annotated[str | None, typer.Option("--run-as", help="Account for a system "
                                               "unit.")] = None,
) -> None:
    """Write (or with --print, show) a systemd unit running `autotx run -c CONFIG`.

    The configuration is checked first. Exit status: 0 written or printed; 2 bad
    configuration, or the unit file cannot be written (run with --print and save it by hand).
    """
    handle_errors(load_config)(config)  # a bad config never becomes a service
    unit = systemd_unit(Path(config), user_level=user_level, run_as=run_as)
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
