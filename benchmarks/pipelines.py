"""Pipeline engine benchmarks: scheduling overhead, plate-qc scaling, log queries.

Run: ``python benchmarks/pipelines.py [overhead] [plate] [log]`` (all three by default).
Prints ``name: value`` lines with the target, and the reference measured in the same run:

- ``overhead_ms_per_run``: 1,000 empty runs recorded, run and logged by the engine on a
  two-worker local cluster, per run (target <= 20 ms); reference: the same 1,000 empty
  functions submitted to the same cluster with plain ``client.submit``.
- ``plate_qc_2_workers_vs_1``: one plate-qc run on a 384-well x 4-site plate (256 x 256,
  1 channel), on a 1-worker and a 2-worker cluster (target >= 1.7x), with plate-qc's
  default batches (24 tasks of 64 images: the scheduler's and client's own CPU, about 3 ms
  a task, runs on the second core for free with one worker but not with two): the ratio of the
  median run times (report and CSV included), with each alternating pair's own ratio,
  the measure step alone, the one-thread part (discover, report) and the bound it sets,
  a pure-numpy reference on the same clusters (what the machine gives two workers at
  that moment) and the load average before and after. On a machine whose cores other
  people use, the numpy reference says how far the ratio is the code's.

  Measured on 2 shared vCPUs (2026-12-01, load 2-4): 1.24-1.42x; the best pairs 1.4x
  (1 worker 4.3 s, 2 workers 3.1 s). What holds it below 2x: discover and report, one
  thread (0.6 s); the per-image CPU time of the measures rises about 15% when both cores
  measure (two bare processes, no dask: 0.86 -> 0.97-1.01 s for 384 images), where the
  in-cache numpy reference does not; and the scheduler's and client's own CPU (0.3-0.5 s
  a plate), free on the idle second core only with one worker.
- ``log_query_ms`` / ``log_stats_s``: a filtered page and the statistics over 100,000
  runs in a SQLite journal (targets <= 100 ms, <= 1 s).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import statistics as stats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotx_lib.config import Config  # noqa: E402
from autotx_lib.journal import Journal  # noqa: E402
from autotx_lib.pipelines.registry import registry_for, workflow  # noqa: E402


@workflow("empty")
def empty(context):
    """Does nothing: what is measured is the engine's own cost."""
    return None


def _noop(value: int) -> int:
    return value


def _config(tmp: Path, **pipelines) -> Config:
    (tmp / "storage").mkdir(parents=True, exist_ok=True)
    return Config(incoming=tmp / "incoming", managed=tmp / "managed",
                  destination=tmp / "storage", pipelines={"run_in_agent": False} | pipelines)


def overhead_benchmark(runs: int = 1000) -> None:
    from distributed import Client

    from autotx_lib.imaging.plate import start_local_cluster
    from autotx_lib.pipelines.engine import PipelineEngine

    with tempfile.TemporaryDirectory() as name, start_local_cluster(2) as cluster, \
            Client(cluster, set_as_default=False) as client:
        tmp = Path(name)
        config = _config(tmp)
        journal = Journal(config.journal_url)
        engine = PipelineEngine(config, journal, client=client, max_active=runs,
                                registry=registry_for(config, {"empty": empty}))
        client.gather(client.map(_noop, range(100), pure=False))  # warm up
        start = time.perf_counter()
        reference = client.map(_noop, range(runs), pure=False)
        client.gather(reference)
        plain = (time.perf_counter() - start) / runs
        start = time.perf_counter()
        for _ in range(runs):
            engine.record("empty", tmp)
        engine.run_until_idle(poll_s=0.5)
        total = (time.perf_counter() - start) / runs
        engine.stop()
        finished = sum(1 for r in journal.engine.connect().exec_driver_sql(
            "select status from pipeline_runs") if r[0] == "finished")
    print(f"overhead_ms_per_run: {total * 1000:.1f} ms (target <= 20; {runs} empty runs, "
          f"{finished} finished; plain client.submit of the same {runs} functions "
          f"{plain * 1000:.2f} ms each: the engine's journal work is "
          f"{(total - plain) * 1000:.1f} ms a run)")


def _numpy_reference(rounds: int = 400) -> float:
    """Pure-numpy CPU-bound work (the machine's own 2-vs-1 worker gain)."""
    x = np.random.default_rng(0).random((256, 256)) + 1.0
    y = np.empty_like(x)
    for _ in range(rounds):
        np.multiply(x, 1.000001, out=y)
        np.sqrt(y, out=x)
        np.add(x, 0.5, out=x)
    return float(x[0, 0])


def _cells_frame(seed: int, shape=(256, 256)) -> np.ndarray:
    """A plausible camera frame: offset, nuclei-like blobs, shot and read noise (as in qc.py)."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(seed)
    spots = np.zeros(shape)
    spots[tuple(rng.integers(0, shape[0], (2, 40)))] = 1
    signal = 4000 * ndi.gaussian_filter(spots, 6) / ndi.gaussian_filter(spots, 6).max()
    image = 100 + rng.poisson(signal + 20) + rng.normal(0, 2, shape)
    return image.clip(0, 65535).astype(np.uint16)


def _plate(root: Path) -> Path:
    import tifffile

    from autotx_lib.imaging.plate import PlateGeometry, well_name

    folder = root / "Synthetic_384" / "TimePoint_1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    base = [_cells_frame(seed) for seed in range(16)]
    geometry = PlateGeometry.from_wells(384)
    for r in range(geometry.rows):
        for c in range(geometry.columns):
            for site in range(1, 5):
                tifffile.imwrite(folder / f"SYN_{well_name(r, c)}_s{site}_w1.tif",
                                 base[int(rng.integers(0, 16))])
    (folder / "SYN.HTD").write_text('"XWells", 24\n"YWells", 16\n')
    return folder.parent


def _warm_worker() -> bool:
    """Import what a plate-qc run uses (bokeh alone takes about a second the first time).

    Also the measures' own imports (qc, scipy.fft, tifffile: 2-3 s a worker under load,
    seen with py-spy inside the first run).
    """
    import bokeh.embed  # noqa: F401
    import bokeh.plotting  # noqa: F401
    import scipy.fft  # noqa: F401
    import tifffile  # noqa: F401
    from bokeh.resources import INLINE

    import autotx_lib.imaging.plate  # noqa: F401
    import autotx_lib.imaging.qc  # noqa: F401
    import autotx_lib.imaging.report  # noqa: F401
    import autotx_lib.pipelines.workflows.plate_qc  # noqa: F401

    INLINE.render()
    return True


def plate_benchmark(repeats: int = 3) -> None:
    """One plate-qc run at a time on a 1-worker and a 2-worker cluster, alternately.

    Both clusters are up for the whole benchmark and their runs alternate (1, 2, 2, 1,
    ...), so a change in the machine's load falls on both alike. Every worker is warmed
    first (imports; the report's bokeh), and one run on each cluster is not counted: what
    is compared is a facility's steady state, not a worker's first import.
    """
    from contextlib import ExitStack

    from distributed import Client

    from autotx_lib.imaging.plate import start_local_cluster
    from autotx_lib.pipelines.engine import PipelineEngine
    from autotx_lib.pipelines.log import run_detail

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as name, ExitStack() as stack:
        tmp = Path(name)
        plate = _plate(tmp / "data")
        seconds: dict[int, list[float]] = {1: [], 2: []}
        measure: dict[int, list[float]] = {1: [], 2: []}
        serial: dict[int, list[float]] = {1: [], 2: []}  # discover and report: one thread
        reference: dict[int, list[float]] = {1: [], 2: []}
        engines, clients, journals = {}, {}, {}
        for workers in (1, 2):
            config = _config(tmp / f"w{workers}")
            journals[workers] = Journal(config.journal_url)
            cluster = stack.enter_context(start_local_cluster(workers))
            clients[workers] = stack.enter_context(Client(cluster, set_as_default=False))
            clients[workers].run(_warm_worker)
            engines[workers] = PipelineEngine(config, journals[workers], client=clients[workers])
            stack.callback(engines[workers].stop)

        def one_run(workers: int, counted: bool) -> int:
            engine, journal = engines[workers], journals[workers]
            run_id = engine.record("plate-qc", plate)  # default batches, as the agent runs it
            engine.run_until_idle()
            detail = run_detail(journal, run_id)
            assert detail["status"] == "finished", detail["error"]
            if counted:
                seconds[workers].append(detail["duration_s"])
                steps = detail["steps"].set_index("name")["duration_s"]
                measure[workers].append(float(steps["measure"]))
                serial[workers].append(float(steps["discover plate"] + steps["report"]))
                client = clients[workers]
                start = time.perf_counter()  # the machine's own gain, same cluster, now
                client.gather(client.map(_numpy_reference, range(24), pure=False))
                reference[workers].append(time.perf_counter() - start)
            return int(detail["results"]["images"])

        for workers in (1, 2):
            one_run(workers, counted=False)
        for repeat in range(repeats):
            for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                images = one_run(workers, counted=True)
    load_after = os.getloadavg()
    one, two = stats.median(seconds[1]), stats.median(seconds[2])
    pairs = [a / b for a, b in zip(seconds[1], seconds[2], strict=True)]
    m1, m2 = stats.median(measure[1]), stats.median(measure[2])
    r1, r2 = stats.median(reference[1]), stats.median(reference[2])
    s1, s2 = stats.median(serial[1]), stats.median(serial[2])

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    print(f"plate_qc_2_workers_vs_1: {one / two:.2f}x (target >= 1.7; one plate-qc run, "
          f"{images} images 256 x 256, median of {repeats}, runs alternating: 1 worker "
          f"{one:.1f} s [{listed(seconds[1])}], 2 workers {two:.1f} s [{listed(seconds[2])}], "
          f"report and CSV included; the measure step alone {m1 / m2:.2f}x ({m1:.1f} s, "
          f"{m2:.1f} s); discover and report, one thread: {s1:.2f} s, {s2:.2f} s, so at best "
          f"{one / (s1 + (one - s1) / 2):.2f}x on two free cores; each pair "
          f"[{', '.join(f'{r:.2f}' for r in pairs)}]x; numpy reference tasks on the same "
          f"clusters {r1 / r2:.2f}x: the machine's own gain meanwhile; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after)")


def log_benchmark(total: int = 100_000) -> None:
    from autotx_lib.journal.pipeline_runs import RUN_STATES, PipelineStore
    from autotx_lib.pipelines import log as runlog

    with tempfile.TemporaryDirectory() as name:
        journal = Journal(f"sqlite:///{Path(name) / 'autotx.sqlite'}")
        store = PipelineStore(journal)
        rng = random.Random(0)
        start_day = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        workflows = ["plate-qc", "previews", "omero-import", "cell-count", "deconvolve"]
        rows = []
        for i in range(total):
            created = start_day + dt.timedelta(seconds=i * 300)
            status = rng.choices(RUN_STATES, weights=[1, 1, 90, 5, 1, 2])[0]
            duration = rng.lognormvariate(2, 1) if status not in ("created", "started") else None
            rows.append(dict(workflow=rng.choice(workflows), version="1",
                             dataset_path=f"/store/u{i % 40}/d{i}", user=f"u{i % 40}",
                             initiator=f"scope-{i % 7}", status=status, params=json.dumps({}),
                             attempts=1, max_attempts=3, created_at=created,
                             duration_s=duration, error="ValueError: bad" if status == "error"
                             else None))
        store.add_runs(rows)
        since = start_day + dt.timedelta(days=200)
        timings = []
        for page in range(5):
            start = time.perf_counter()
            frame = runlog.runs(journal, workflow="previews", status="error", since=since,
                                limit=50, offset=page * 50)
            timings.append(time.perf_counter() - start)
        query_ms = stats.median(timings) * 1000
        start = time.perf_counter()
        runlog.count(journal, workflow="previews", status="error", since=since)
        count_ms = (time.perf_counter() - start) * 1000
        stat_times = {}
        for by in ("day", "workflow", "initiator"):
            start = time.perf_counter()
            table = runlog.statistics(journal, by=by)
            stat_times[by] = time.perf_counter() - start
        assert len(frame) == 50 and int(table["runs"].sum()) == total
    print(f"log_query_ms: {query_ms:.1f} ms (target <= 100; a 50-run page filtered by "
          f"workflow, status and date over {total} runs, median of 5 pages; the count "
          f"{count_ms:.1f} ms)")
    print(f"log_stats_s: {max(stat_times.values()):.2f} s (target <= 1; statistics over "
          f"{total} runs by " + ", ".join(f"{k} {v:.2f} s" for k, v in stat_times.items())
          + ")")


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["overhead", "plate", "log"]
    if "overhead" in chosen:
        overhead_benchmark(int(sys.argv[sys.argv.index("--runs") + 1])
                           if "--runs" in sys.argv else 1000)
    if "log" in chosen:
        log_benchmark()
    if "plate" in chosen:
        plate_benchmark(int(sys.argv[sys.argv.index("--repeats") + 1])
                        if "--repeats" in sys.argv else 3)
