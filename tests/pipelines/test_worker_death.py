"""A workflow that leaks memory until its worker process is killed: the run ends as an error.

Its own small process cluster (one worker with a 400 MB limit; the nanny kills it at 95%),
since an in-process cluster has no worker process to lose.
"""

from __future__ import annotations

import pytest

from autotx_lib.journal import Journal
from autotx_lib.pipelines import log as runlog
from autotx_lib.pipelines.engine import PipelineEngine
from autotx_lib.pipelines.registry import registry_for
from tests.pipelines.conftest import pipeline_config
from tests.pipelines.leaky_workflow import LEAKS


@pytest.fixture(scope="module")
def small_cluster():
    distributed = pytest.importorskip("distributed", reason="needs dask distributed")
    import dask

    from autotx_lib.imaging.plate import start_local_cluster

    # no second chance on another worker: one death is enough to know. start_local_cluster
    # leaves os.environ as it was (a plain LocalCluster leaves the workers' malloc settings
    # in it, and every cluster started later in this process would inherit them)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            start_local_cluster(1, memory_limit="400MB") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def test_a_run_whose_worker_dies_is_an_error_worker_died(tmp_path, small_cluster):
    config = pipeline_config(tmp_path)
    journal = Journal(config.journal_url)
    engine = PipelineEngine(config, journal, client=small_cluster,
                            registry=registry_for(config, {"leaks": LEAKS}))
    run_id = engine.record("leaks", tmp_path)
    engine.run_until_idle(timeout_s=120)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error" and detail["next_attempt_at"] is None
    assert detail["error"].startswith("worker died while running it")
    assert "give the workers more memory" in detail["error"]
    # the cluster's new worker takes the next run
    ok = engine.record("leaks", tmp_path, params={"megabytes": 10})
    engine.run_until_idle(timeout_s=120)
    assert runlog.run_detail(journal, ok)["status"] == "finished"
    engine.stop()
