"""How a page is served: the Voila command line, its environment and its token.

``autotx dashboard`` (the face) calls these and runs the command. Every served page needs
a token: a random one (printed in the page's URL, as Jupyter does) or the one in
``$AUTOTX_DASHBOARD_TOKEN``. The token goes to Voila through its environment
(``JUPYTER_TOKEN``), never on its command line, which every local user can read.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import sys
from pathlib import Path

from autotx_lib.pages import TEMPLATE_ROOT, Page

#: A token given by the user instead of a random one.
TOKEN_ENV = "AUTOTX_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16
LOOPBACK = "127.0.0.1"


def choose_token(environ: dict[str, str] | None = None) -> str:
    """The token pages need: ``$AUTOTX_DASHBOARD_TOKEN`` if set, else a new random one.

    Raises
    ------
    ValueError
        The given token is shorter than 16 characters (too easy to guess).
    """
    given = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if not given:
        return secrets.token_urlsafe(24)
    if len(given) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{TOKEN_ENV} is {len(given)} characters long; give at least "
                         f"{MIN_TOKEN_LENGTH} (e.g. `python3 -c 'import secrets; "
                         f"print(secrets.token_urlsafe(24))'`), or unset it for a random one")
    return given


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` (an address, or ``localhost``) is reachable from this machine only."""
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def page_url(ip: str, port: int, token: str) -> str:
    """The URL to open, with the token (``0.0.0.0`` shown as this machine's name)."""
    host = socket.gethostname() if ip in ("0.0.0.0", "::", "") else ip
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/?token={token}"


def voila_command(page: Path, *, port: int, ip: str = LOOPBACK, max_pages: int = 4,
                  idle_minutes: float = 10.0) -> list[str]:
    """The command line serving ``page`` with Voila.

    Parameters
    ----------
    page : Path
        The page's notebook.
    port : int
        TCP port.
    ip : str
        Address to listen on; loopback by default.
    max_pages : int
        Most kernels (open pages) at once; a load beyond gets HTTP 503.
    idle_minutes : float
        A kernel no browser has been connected to for this long is shut down.

    Examples
    --------
    >>> command = voila_command(Path("page.ipynb"), port=8866)
    >>> "--Voila.ip=127.0.0.1" in command and "--Voila.auto_token=True" in command
    True
    """
    idle_seconds = max(1, round(idle_minutes * 60))
    return [
        sys.executable, "-m", "voila", str(page), "--no-browser", f"--port={port}",
        f"--Voila.ip={ip}", "--Voila.port_retries=0",
        "--Voila.auto_token=True",  # the token comes from JUPYTER_TOKEN (see serve_environment)
        "--VoilaConfiguration.template=autotx",  # our template: no CDN links
        "--VoilaConfiguration.show_tracebacks=True",
        "--VoilaConfiguration.multi_kernel_manager_class="
        "autotx_lib.pages.kernels.BoundedKernelManager",
        f"--BoundedKernelManager.max_kernels={max_pages}",
        f"--MappingKernelManager.cull_idle_timeout={idle_seconds}",
        f"--MappingKernelManager.cull_interval={max(1, min(60, idle_seconds // 2))}",
    ]


def serve_environment(page: Page, value: str, token: str,
                      environ: dict[str, str] | None = None) -> dict[str, str]:
    """Voila's environment: the page's variable, the token, and our template on JUPYTER_PATH."""
    env = dict(os.environ if environ is None else environ)
    env[page.variable] = value
    env["JUPYTER_TOKEN"] = token
    env.pop("JUPYTER_TOKEN_FILE", None)
    paths = [str(TEMPLATE_ROOT), *filter(None, env.get("JUPYTER_PATH", "").split(os.pathsep))]
    env["JUPYTER_PATH"] = os.pathsep.join(paths)
    return env
