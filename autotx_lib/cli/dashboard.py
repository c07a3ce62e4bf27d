"""``autotx dashboard NAME``: serve one of the dashboard pages (``widgets/``) with Voila.

The page is served on loopback only (127.0.0.1); BokehJS is inlined by the page, so
nothing is fetched from the internet. The configuration and the folder to show reach
the page through environment variables (``AUTOTX_CONFIG``, ``AUTOTX_PATH``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import ExitCode, fail

#: Dashboard name -> (page in widgets/, what it needs: "config" or "path").
PAGES: dict[str, tuple[str, str]] = {
    "transfer-monitor": ("transfer_monitor.ipynb", "config"),
    "plate-qc": ("plate_qc.ipynb", "path"),
    "stack-browser": ("stack_browser.ipynb", "path"),
    "facility": ("facility.ipynb", "config"),  # -c: a file with the hub's url and token_file
}

#: Environment variables read by the pages.
CONFIG_ENV = "AUTOTX_CONFIG"
PATH_ENV = "AUTOTX_PATH"


def widgets_folder() -> Path:
    """The folder holding the dashboard pages (``widgets/`` beside the package)."""
    return Path(__file__).resolve().parents[2] / "widgets"


def voila_command(page: Path, port: int) -> list[str]:
    """The command line that serves ``page`` with Voila on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "voila", str(page), "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
            "--VoilaConfiguration.show_tracebacks=True"]


def dashboard(
    name: Annotated[str, typer.Argument(help="transfer-monitor, plate-qc or stack-browser.")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="The agent's configuration (for transfer-monitor).")] = None,
    path: Annotated[Path | None, typer.Option(
        "--path", "-p", help="Plate folder (plate-qc) or folder of images (stack-browser).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8866,
) -> None:
    """Serve a dashboard page with Voila on http://127.0.0.1:PORT/ until Ctrl-C.

    Exit status: 0 when Voila ends normally; 2 for an unknown name, a missing --config
    or --path, or a missing page; otherwise Voila's own status; 130 interrupted.
    """
    key = name.replace("_", "-").lower()
    if key not in PAGES:
        raise fail(f"unknown dashboard {name!r}; choose one of {', '.join(PAGES)}")
    page_name, needs = PAGES[key]
    page = widgets_folder() / page_name
    if not page.is_file():
        raise fail(f"the page {page} is missing; reinstall autotx_lib from its source tree")
    env = dict(os.environ)
    if needs == "config":
        if config is None:
            raise fail(f"{key} needs the agent's configuration: add -c autotx.toml")
        if not config.exists():
            raise fail(f"the configuration {config} does not exist")
        env[CONFIG_ENV] = str(config.resolve())
    else:
        if path is None:
            raise fail(f"{key} needs a folder: add --path FOLDER")
        if not path.exists():
            raise fail(f"{path} does not exist")
        env[PATH_ENV] = str(path.resolve())
    if not 0 < port < 65536:
        raise fail(f"port {port} is not a TCP port (1..65535)")
    typer.echo(f"serving {key} at http://127.0.0.1:{port}/ (Ctrl-C to stop)", err=True)
    raise typer.Exit(_serve(voila_command(page, port), env, page.parent))


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
