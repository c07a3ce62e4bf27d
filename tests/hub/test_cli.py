"""``autotx hub``: init, tokens, and serving (loopback, TLS, refusal without TLS)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from autotx_lib.hub.client import HubClient
from autotx_lib.hub.settings import HubSettings, bind_problem
from autotx_lib.hub.store import HubStore

from .conftest import AUTOTX, ProcessHub, answers, free_port

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def autotx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOTX, *args], env=ENV, capture_output=True, text=True, timeout=60)


def test_init_and_tokens_from_the_command_line(tmp_path):
    toml = tmp_path / "hub.toml"
    toml.write_text('database = "sqlite:///hub.sqlite"\n')  # relative to hub.toml
    init = autotx("hub", "init", "-c", str(toml))
    assert init.returncode == 0, init.stderr
    admin = init.stdout.strip().splitlines()[-1]
    store = HubStore(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    assert store.token_for(admin).role == "admin"
    again = autotx("hub", "init", "-c", str(toml))
    assert again.returncode == 2 and "initialised already" in again.stderr
    added = autotx("hub", "token", "add", "-c", str(toml), "pc-confocal1", "--role", "agent")
    agent = added.stdout.strip().splitlines()[-1]
    assert store.token_for(agent).agent_id == "pc-confocal1"
    wrong = autotx("hub", "token", "add", "-c", str(toml), "x", "--role", "boss")
    assert wrong.returncode == 2 and "choose one of agent, viewer, operator, admin" in wrong.stderr
    listed = autotx("hub", "token", "list", "-c", str(toml))
    assert "pc-confocal1" in listed.stdout and agent not in listed.stdout
    assert autotx("hub", "token", "revoke", "-c", str(toml), "pc-confocal1").returncode == 0
    assert store.token_for(agent) is None
    assert autotx("hub", "token", "revoke", "-c", str(toml), "pc-confocal1").returncode == 2


def test_a_bad_hub_toml_is_one_clear_error(tmp_path):
    toml = tmp_path / "hub.toml"
    toml.write_text('host = "127.0.0.1"\nprot = 1\n')
    result = autotx("hub", "init", "-c", str(toml))
    assert result.returncode == 2
    assert "database" in result.stderr and "prot" in result.stderr


def test_serve_refuses_a_public_address_without_tls(tmp_path):
    port = free_port()
    toml = tmp_path / "hub.toml"
    toml.write_text(f'database = "sqlite:///hub.sqlite"\nport = {port}\n')
    result = autotx("hub", "serve", "-c", str(toml), "--host", "0.0.0.0")
    assert result.returncode == 2 and "without TLS" in result.stderr
    assert "--insecure" in result.stderr and not answers(port)
    public = HubSettings(database="sqlite://", host="0.0.0.0")
    assert bind_problem(public, insecure=True) is None
    assert bind_problem(HubSettings(database="sqlite://")) is None  # loopback by default


def test_serve_with_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificate")
    cert, key = tmp_path / "hub.pem", tmp_path / "hub.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    database = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    store = HubStore(database)
    token = store.add_token("viewer", "viewer")
    hub = ProcessHub(tmp_path, database, extra=f'ssl_certfile = "{cert}"\n'
                     f'ssl_keyfile = "{key}"\n')
    hub.start()
    try:
        url = f"https://127.0.0.1:{hub.port}/agents"
        assert HubClient(f"https://127.0.0.1:{hub.port}", token,
                         verify=str(cert)).request("GET", "/agents") == []
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=True)  # not trusted without the certificate
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{hub.port}/agents")  # no clear text
    finally:
        hub.kill()
