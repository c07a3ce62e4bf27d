"""The agent with [pipelines] rules: it records due runs and goes on delivering, whatever dask does."""

from __future__ import annotations

import io

import numpy as np
import pytest

from autotx_lib import pipelines
from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore
from autotx_lib.pipelines import pipeline_hooks
from autotx_lib.pipelines.engine import PipelineEngine
from autotx_lib.transfer.agent import Agent
from tests.conftest import wait_for
from tests.pipelines.conftest import closed_port, make_dataset, pipeline_config

tifffile = pytest.importorskip("tifffile", reason="the imaging extra is needed")


def _tiff() -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    return buffer.getvalue()


def test_scheduler_unreachable_runs_wait_and_the_agent_goes_on_delivering(tmp_path,
                                                                           dask_client):
    config = pipeline_config(tmp_path, scheduler=f"tcp://127.0.0.1:{closed_port()}",
                             run_in_agent=True, connect_timeout_seconds=0.5,
                             rules=[{"workflow": "previews", "file_types": [".tif"]}])
    journal = Journal(config.journal_url)
    hooks = pipeline_hooks(config, journal)  # starts the engine thread, which cannot connect
    engine = pipelines._engines[config.journal_url]
    try:
        for name in ("run1", "run2"):
            make_dataset(config.incoming, "alice", name, {"cells.tif": _tiff()})
        summary = Agent(config, journal=journal, after_delivery=hooks).run(once=True)
        assert len(summary.delivered) == 2
        store = PipelineStore(journal)
        runs = store.query(limit=10)
        assert sorted(r.dataset_path for r in runs) == \
            [str(config.destination / "alice" / n) for n in ("run1", "run2")]
        wait_for(lambda: engine._unreachable_until > 0, 30, "the engine to try the scheduler")
        assert {r.status for r in store.query(limit=10)} == {"created"}
        make_dataset(config.incoming, "alice", "run3", {"more.tif": _tiff()})
        assert len(Agent(config, journal=journal, after_delivery=hooks).run(once=True)
                   .delivered) == 1
    finally:
        engine.stop()
        pipelines._engines.pop(config.journal_url, None)
    # the scheduler is back: the waiting runs run
    back = PipelineEngine(config, journal, client=dask_client)
    back.run_until_idle(timeout_s=60)
    assert [r.status for r in PipelineStore(journal).query(limit=10)] == ["finished"] * 3
    back.stop()
