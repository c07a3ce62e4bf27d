"""Fixtures for hub tests: a real hub (uvicorn on loopback) over SQLite or PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from autotx_lib.hub.app import create_app
from autotx_lib.hub.client import HubClient
from autotx_lib.hub.migrate import VERSION_TABLE
from autotx_lib.hub.settings import HubSettings
from autotx_lib.hub.store import HubStore, metadata

from ..conftest import wait_for as shared_wait_for
from ..transfer.conftest import facility  # noqa: F401 - the agent tests' facility fixture

AUTOTX = str(Path(sys.executable).with_name("autotx"))


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    """The suite's :func:`tests.conftest.wait_for`, with this folder's defaults."""
    return shared_wait_for(condition, timeout, what or str(condition))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ThreadHub:
    """A hub served by uvicorn in a thread of the test process, on a port of its own."""

    def __init__(self, settings: HubSettings, start: bool = True):
        self.settings = settings
        self.store = HubStore(settings.database,
                              token_cache_seconds=settings.token_cache_seconds)
        self.admin = self.store.add_token("admin", "admin")
        self.viewer = self.store.add_token("viewer", "viewer")
        self.operator = self.store.add_token("operator", "operator")
        self.agent = self.store.add_token("test-pc", "agent")
        # a port of its own unless the test names one (8765, the default, may be taken by
        # another test run on this machine)
        self.port = settings.port if "port" in settings.model_fields_set else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        import uvicorn

        config = uvicorn.Config(create_app(self.settings, self.store), host="127.0.0.1",
                                port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, what="the hub to start")

    def client(self, token: str) -> HubClient:
        return HubClient(self.url, token)

    def stop(self) -> None:
        if self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)
        self.store.close()


@pytest.fixture(scope="session")
def postgres_url():
    pgserver = pytest.importorskip("pgserver", reason="pgserver (a PostgreSQL server packaged "
                                   "for pip) is installed by ./run-tests")
    # not under pytest's tmp folder: as root, pgserver runs PostgreSQL as another user
    data = Path(tempfile.mkdtemp(prefix="autotx-hub-pg-"))
    server = pgserver.get_server(data, cleanup_mode="stop")
    url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    yield url
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


def fresh_postgres(url: str) -> str:
    """The PostgreSQL database emptied of hub tables (each test starts clean)."""
    store = HubStore(url, create=False)
    metadata.drop_all(store.engine)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {VERSION_TABLE}")
    store.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request, tmp_path) -> str:
    """The hub's database URL: SQLite in tmp_path, or a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite'}"
    return fresh_postgres(request.getfixturevalue("postgres_url"))


@pytest.fixture
def hub(tmp_path):
    """A hub over SQLite with tokens admin, viewer, operator and agent 'test-pc'."""
    server = ThreadHub(HubSettings(database=f"sqlite:///{tmp_path / 'hub.sqlite'}"))
    yield server
    server.stop()


class ProcessHub:
    """``autotx hub serve`` as a real subprocess (to kill it with SIGKILL)."""

    def __init__(self, folder: Path, database: str, port: int | None = None, extra: str = ""):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.toml = folder / "hub.toml"
        self.toml.write_text(f'database = "{database}"\nport = {self.port}\n{extra}')
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.process = subprocess.Popen([AUTOTX, "hub", "serve", "-c", str(self.toml)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: answers(self.port) or self.process.poll() is not None,
                 what="the hub process to answer")
        assert self.process.poll() is None, self.process.stderr.read().decode()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
