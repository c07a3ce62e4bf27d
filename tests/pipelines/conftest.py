"""Fixtures for post-delivery pipelines: a facility with OMERO import enabled (no server)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from autotx_lib.config import Config


def closed_port() -> int:
    """A loopback port nobody listens on (connecting to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_dataset(incoming: Path, user: str, name: str, files: dict[str, bytes]) -> Path:
    folder = incoming / user / name
    folder.mkdir(parents=True, exist_ok=True)
    for relpath, content in files.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_bytes(content)
    return folder


@pytest.fixture
def omero_facility(tmp_path: Path, monkeypatch) -> Config:
    """A facility (destination folder for 'alice') whose [omero] import is enabled."""
    for name in ("OMERO_HOST", "OMERO_USER", "OMERO_PASSWORD", "OMERO_PORT"):
        monkeypatch.delenv(name, raising=False)
    destination = tmp_path / "storage"
    (destination / "alice").mkdir(parents=True)
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destination=destination, readiness={"quiet_seconds": 0}, host_alias="scope-1",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0},
                  omero={"enabled": True, "host": "127.0.0.1", "port": closed_port(),
                         "user": "importer", "run_in_agent": False, "max_attempts": 3,
                         "retry_seconds": 45, "max_retry_seconds": 100})


def write_config(config: Config, path: Path, omero: str = "") -> Path:
    o = config.omero
    path.write_text(
        f'incoming = "{config.incoming}"\nmanaged = "{config.managed}"\n'
        f'destination = "{config.destination}"\nhost_alias = "{config.host_alias}"\n'
        '[readiness]\nquiet_seconds = 0\n[gate]\nmax_cpu_percent = 100\n'
        f'[omero]\nenabled = true\nhost = "{o.host}"\nport = {o.port}\nuser = "{o.user}"\n'
        f'run_in_agent = false\nmax_attempts = {o.max_attempts}\n{omero}')
    return path


# --- workflow engine fixtures -------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    """One in-process dask cluster per test module (2 workers, 2 threads each)."""
    distributed = pytest.importorskip("distributed", reason="the pipeline engine needs dask "
                                      "distributed (pip install autotx_lib[imaging])")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def pipeline_config(tmp_path: Path, **pipelines) -> Config:
    """A facility whose [pipelines] retries at once (retry_seconds 0)."""
    destination = tmp_path / "storage"
    (destination / "alice").mkdir(parents=True, exist_ok=True)
    settings = {"retry_seconds": 0, "max_attempts": 3, "run_in_agent": False} | pipelines
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destination=destination, host_alias="scope-1", pipelines=settings,
                  readiness={"quiet_seconds": 0},
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})


def delivered_dataset(config: Config, journal, name: str, files: dict[str, bytes],
                      user: str = "alice"):
    """A delivered dataset: its folder at the destination and its journal row."""
    from autotx_lib.journal import utcnow

    folder = make_dataset(config.destination, user, name, files)
    created = utcnow()
    dataset_id = journal.add_dataset(
        user=user, name=name, stamp="20261201T100000", state="done",
        incoming_path=str(config.incoming / user / name),
        processing_path=str(config.managed / "processing" / name), dest_path=str(folder),
        algorithm="xxh3_128", total_files=len(files), created_at=created, started_at=utcnow(),
        finished_at=utcnow(), manifest_digest="abc")
    journal.add_files(dataset_id, [(r, len(c), 0) for r, c in files.items()])
    return journal.dataset(dataset_id)
