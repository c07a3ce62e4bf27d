"""``autotx dashboard NAME``: serve one of the dashboard pages (``autotx_lib/pages``) with Voila.

The page needs a token (random and printed in the URL, or ``$AUTOTX_DASHBOARD_TOKEN``);
it is served on loopback unless ``--ip`` says otherwise. At most ``--max-pages`` pages
(kernels) run at once, and a page no browser has watched for ``--idle-minutes`` is closed.
BokehJS and the icon font are served locally, so nothing is fetched from the internet.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import ExitCode, fail
from autotx_lib.pages import PAGES
from autotx_lib.pages.serve import (
    LOOPBACK,
    TOKEN_ENV,
    choose_token,
    is_loopback,
    page_url,
    serve_environment,
    voila_command,
)


def dashboard(
    name: Annotated[str, typer.Argument(help="transfer-monitor, pipelines, plate-qc, "
                                        "stack-browser, session or facility.")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The agent's configuration (transfer-monitor, session, "
        "pipelines), or the hub access file (facility).")] = None,
    path: Annotated[Path | None, typer.Option(
        "--path", "-p", help="Plate folder (plate-qc) or folder of images (stack-browser).")] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8866,
    ip: Annotated[str, typer.Option(help="Address to listen on: 127.0.0.1 (this machine only) "
                                    "or e.g. 0.0.0.0 (every network; plain HTTP).")] = LOOPBACK,
    max_pages: Annotated[int, typer.Option(help="Most pages (kernels) open at once.")] = 4,
    idle_minutes: Annotated[float, typer.Option(
        help="Close a page no browser has watched for this long.")] = 10.0,
) -> None:
    """Serve a dashboard page with Voila until Ctrl-C; open the printed URL (it has the token).

    Exit status: 0 when Voila ends normally; 2 for an unknown name, a missing --config
    or --path, a bad option or token, or a missing page; otherwise Voila's own status;
    130 interrupted.
    """
    key = name.replace("_", "-").lower()
    if key not in PAGES:
        raise fail(f"unknown dashboard {name!r}; choose one of {', '.join(PAGES)}")
    page = PAGES[key]
    if not page.notebook.is_file():
        raise fail(f"the page {page.notebook} is missing; reinstall autotx_lib")
    given = config if page.variable == "AUTOTX_CONFIG" else path
    if given is None:
        raise fail(f"{key} needs {page.what}: add {page.option}")
    if not given.exists():
        raise fail(f"{given} does not exist")
    if not 0 < port < 65536:
        raise fail(f"port {port} is not a TCP port (1..65535)")
    if max_pages < 1:
        raise fail(f"--max-pages {max_pages}: give at least 1")
    if idle_minutes <= 0:
        raise fail(f"--idle-minutes {idle_minutes}: give a positive number of minutes")
    try:
        token = choose_token()
    except ValueError as error:
        raise fail(str(error)) from None
    if not is_loopback(ip):
        typer.echo(f"note: serving on {ip} over plain HTTP: the token and the pages cross the "
                   "network unencrypted. Prefer an SSH tunnel to 127.0.0.1, or a TLS proxy "
                   "(README, Dashboards).", err=True)
    env = serve_environment(page, str(given.resolve()), token)
    url = page_url(ip, port, token)
    given = " (the token from $" + TOKEN_ENV + ")" if token == os.environ.get(TOKEN_ENV) else ""
    typer.echo(f"serving {key} at {url}{given} (Ctrl-C to stop)", err=True)
    command = voila_command(page.notebook, port=port, ip=ip, max_pages=max_pages,
                            idle_minutes=idle_minutes)
    raise typer.Exit(_serve(command, env, page.notebook.parent))


def _serve(command: list[str], env: dict[str, str], cwd: Path) -> int:
    """Run Voila until it ends; SIGTERM and Ctrl-C stop it (and its kernels) too."""
    process = subprocess.Popen(command, env=env, cwd=cwd)

    def forward(signum: int, frame: object) -> None:
        process.terminate()

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: nothing to forward
        previous = None
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return int(ExitCode.INTERRUPTED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
