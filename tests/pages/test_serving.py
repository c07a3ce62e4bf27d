"""Serving the pages safely: a token, a bound on kernels, culling, pages shipped in the package.

These talk HTTP to the real `autotx dashboard` (Voila) and count its kernel processes with
psutil; the browser tests are in test_pages.py.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib.cli.main import app
from autotx_lib.pages import PAGES, PAGES_FOLDER, TEMPLATE_ROOT, transfer_monitor_page
from autotx_lib.pages.serve import (
    TOKEN_ENV,
    choose_token,
    is_loopback,
    page_url,
    serve_environment,
    voila_command,
)

from .served import Served, free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _get(url: str, timeout: float = 180) -> tuple[int, str, dict[str, str]]:
    """Status, body and headers of a GET, without following redirects."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)


# --- without a server --------------------------------------------------------------------

def test_the_printed_url_names_this_machine_when_serving_every_network():
    assert page_url("127.0.0.1", 8866, "abc") == "http://127.0.0.1:8866/?token=abc"
    assert page_url("0.0.0.0", 80, "abc") == f"http://{socket.gethostname()}:80/?token=abc"
    assert page_url("::1", 80, "abc") == "http://[::1]:80/?token=abc"


def test_a_random_token_each_time_or_the_given_one():
    assert choose_token({}) != choose_token({})
    assert len(choose_token({})) >= 24
    assert choose_token({TOKEN_ENV: "x" * 20}) == "x" * 20
    with pytest.raises(ValueError, match="at least 16"):
        choose_token({TOKEN_ENV: "secret"})


def test_the_token_travels_in_the_environment_never_on_the_command_line(tmp_path):
    page = PAGES["plate-qc"]
    command = voila_command(page.notebook, port=9001, max_pages=3, idle_minutes=2)
    env = serve_environment(page, str(tmp_path), "TOKEN-abcdefghijklmnop", {"JUPYTER_PATH": "/x"})
    assert not any("TOKEN-abc" in part for part in command)
    assert env["JUPYTER_TOKEN"] == "TOKEN-abcdefghijklmnop"
    assert env["AUTOTX_PATH"] == str(tmp_path)
    assert env["JUPYTER_PATH"].split(os.pathsep) == [str(TEMPLATE_ROOT), "/x"]
    assert "--Voila.ip=127.0.0.1" in command and "--Voila.auto_token=True" in command
    assert "--BoundedKernelManager.max_kernels=3" in command
    assert "--MappingKernelManager.cull_idle_timeout=120" in command


@pytest.mark.parametrize(("ip", "loopback"), [("127.0.0.1", True), ("localhost", True),
                                              ("::1", True), ("0.0.0.0", False),
                                              ("192.168.1.5", False)])
def test_loopback_addresses(ip, loopback):
    assert is_loopback(ip) is loopback


def test_a_page_without_its_variable_says_what_to_run(monkeypatch):
    monkeypatch.delenv("AUTOTX_CONFIG", raising=False)
    shown = transfer_monitor_page().data
    assert "Serve it with `autotx dashboard transfer-monitor -c CONFIG`" in shown
    assert "set the environment variable AUTOTX_CONFIG" in shown


def test_a_short_given_token_is_refused_before_anything_starts(monkeypatch, tmp_path):
    monkeypatch.setenv(TOKEN_ENV, "guessable")
    result = CliRunner().invoke(app, ["dashboard", "stack-browser", "--path", str(tmp_path)])
    assert result.exit_code == 2
    assert "at least 16" in " ".join(result.output.split())


def test_an_installed_package_ships_the_pages_and_the_template(tmp_path):
    """A wheel (what a non-editable install unpacks) holds the notebooks and the template."""
    source = tmp_path / "src"  # setuptools writes build/ into the tree it builds: a copy
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "autotx_lib", source / "autotx_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("autotx_lib-*.whl"))).namelist()
    for page in PAGES.values():
        assert f"autotx_lib/pages/{page.notebook.name}" in names
    template = "autotx_lib/pages/share/jupyter/voila/templates/autotx/"
    assert {template + name for name in ("conf.json", "index.html.j2", "error.html")} <= set(names)
    assert PAGES_FOLDER == ROOT / "autotx_lib" / "pages"


# --- against a running server ------------------------------------------------------------

requires_voila = pytest.mark.skipif(importlib.util.find_spec("voila") is None,
                                    reason="serving pages needs voila (the viz extra)")


@requires_voila
def test_without_the_token_no_page_and_no_kernel(tmp_path):
    given = "given-token-of-the-facility-0123"
    served = Served(["stack-browser", "--path", str(tmp_path)], tmp_path / "voila.log",
                    env={TOKEN_ENV: given})
    try:
        assert served.token == given and "from $AUTOTX_DASHBOARD_TOKEN" in \
            served.log.read_text()
        for url in (served.base, f"{served.base}?token=wrong-{served.token}"):
            status, _, headers = _get(url)
            assert status in (302, 403), status
            if status == 302:
                assert "/login" in headers["Location"]
        status, _, _ = _get(f"{served.base}api/kernels")
        assert status in (302, 403)
        assert served.kernels() == []  # nothing was started for the stranger
        status, body, _ = _get(served.url)
        assert status == 200 and "voila" in body
        served.wait_for_kernels(1)
    finally:
        served.stop()


@requires_voila
def test_page_loads_beyond_the_bound_are_refused_with_what_to_do(tmp_path):
    served = Served(["stack-browser", "--path", str(tmp_path), "--max-pages", "2"],
                    tmp_path / "voila.log")
    try:
        for _ in range(2):
            assert _get(served.url)[0] == 200
        for _ in range(3):  # more loads: refused, and no kernel more
            status, body, _ = _get(served.url)
            assert status == 503, status
            assert "2 dashboard pages are open" in body and "Close a page" in body
        assert len(served.kernels()) == 2
    finally:
        served.stop()


@requires_voila
def test_a_page_nobody_watches_is_closed_after_the_idle_time(tmp_path):
    served = Served(["stack-browser", "--path", str(tmp_path), "--idle-minutes", "0.05"],
                    tmp_path / "voila.log")
    try:
        assert _get(served.url)[0] == 200  # a load without a browser: no connection
        served.wait_for_kernels(0, seconds=60)
        assert "no page connected" in served.log.read_text()
    finally:
        served.stop()


@requires_voila
def test_a_page_opened_directly_with_voila_says_what_to_do(tmp_path):
    """`voila autotx_lib/pages/transfer_monitor.ipynb` without AUTOTX_CONFIG: a message."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AUTOTX_CONFIG"}
    log = (tmp_path / "voila.log").open("wb")
    voila = subprocess.Popen(
        [sys.executable, "-m", "voila", str(PAGES["transfer-monitor"].notebook), "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", voila, tmp_path / "voila.log")
        status, body, _ = _get(f"http://127.0.0.1:{port}/")
        assert status == 200
        assert "autotx dashboard transfer-monitor -c CONFIG" in body
        assert "There was an error" not in body
    finally:
        voila.terminate()
        voila.wait(timeout=30)
        log.close()
