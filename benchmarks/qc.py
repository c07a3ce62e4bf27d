"""Plate-QC speed, as ratios against references measured in the same run.

1. The CellProfiler set (FocusScore, LocalFocusScore at scale 20, PowerLogLogSlope,
   PercentMaximal/Minimal, intensity statistics) on a 2160 x 2160 uint16 frame:
   ``autotx_lib.imaging.qc`` vs the way CellProfiler 4.2 computes it
   (``_cellprofiler_reference``), values checked equal to 1e-9 relative. Also images/s
   on 1 and 2 cores (1 or 2 spawned processes with the QC worker environment, each
   measuring its own frame; median of several repeats).
2. A synthetic 384-well plate (4 fields, 2 channels, 256 x 256): ``plate_qc`` on
   :func:`~autotx_lib.imaging.plate.start_local_cluster` with 2 one-thread worker
   processes vs 1, same batching (32 images a task), median of several repeats after a
   warm-up run. The same two clusters also run a pure-numpy CPU-bound reference
   (in-place ufuncs, no I/O, no allocation): its 2-vs-1 ratio is what this machine
   gives an embarrassingly parallel job at that moment, the ceiling for plate QC.

The machine may be shared: the load average is printed before and after, and every
ratio should be read against the reference measured alongside it.

Run: ``.venv/bin/python benchmarks/qc.py [repeats]``
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cellprofiler_reference as cp  # noqa: E402

from autotx_lib.imaging import qc  # noqa: E402


def sCMOS_frame(seed: int = 0, shape=(2160, 2160)) -> np.ndarray:
    """A plausible sCMOS frame: offset, nuclei-like blobs, shot and read noise."""
    import scipy.ndimage as ndi

    rng = np.random.default_rng(seed)
    spots = np.zeros(shape)
    spots[tuple(rng.integers(0, shape[0], (2, 600)))] = 1
    signal = 4000 * ndi.gaussian_filter(spots, 6) / ndi.gaussian_filter(spots, 6).max()
    image = 100 + rng.poisson(signal + 20) + rng.normal(0, 2, shape)
    return image.clip(0, 65535).astype(np.uint16)


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def _measure_many(seed: int, count: int = 6) -> float:
    """Images per second of one worker measuring ``count`` frames (synthesis not timed)."""
    image = sCMOS_frame(seed)
    qc.measure_image(image, "cellprofiler")  # warm up (imports, FFT plans)
    start = time.perf_counter()
    for _ in range(count):
        qc.measure_image(image, "cellprofiler")
    return count / (time.perf_counter() - start)


def images_per_second(workers: int) -> float:
    """Spawned worker processes with the QC worker environment (as start_local_cluster)."""
    from autotx_lib.imaging.plate import QC_WORKER_ENVIRONMENT

    saved = dict(os.environ)
    os.environ.update(QC_WORKER_ENVIRONMENT)  # read by glibc when each worker starts
    try:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            return sum(pool.map(_measure_many, range(workers)))  # workers run at the same time
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def metrics_benchmark() -> None:
    image = sCMOS_frame()
    reference = cp.cellprofiler_metrics(image, scale=20)
    ours = qc.measure_image(image, "cellprofiler", window=20)
    worst = max(abs(ours[k] - v) / max(abs(v), 1e-300) for k, v in reference.items())
    assert worst <= 1e-9, f"values differ from CellProfiler's by {worst:.2e} relative"
    t_reference = best_of(lambda: cp.cellprofiler_metrics(image, scale=20), 3)
    t_ours = best_of(lambda: qc.measure_image(image, "cellprofiler", window=20), 5)
    t_mean = best_of(lambda: np.mean(image), 5)
    t_all = best_of(lambda: qc.measure_image(image), 3)
    print(f"cellprofiler_set_2160x2160_uint16: {t_reference / t_ours:.1f}x "
          f"(ours {t_ours * 1e3:.0f} ms, CellProfiler-style {t_reference * 1e3:.0f} ms, "
          f"numpy.mean {t_mean * 1e3:.1f} ms; max relative difference {worst:.1e})")
    print(f"all_metrics_2160x2160_uint16: {t_all * 1e3:.0f} ms per image "
          f"(CellProfiler set + Laplacian variance + Tenengrad + percent_saturated)")
    ones, twos = [], []
    for _ in range(REPEATS):  # interleaved, so a change of load hits both
        ones.append(images_per_second(1))
        twos.append(images_per_second(2) if (os.cpu_count() or 1) >= 2 else float("nan"))
    one, two = statistics.median(ones), statistics.median(twos)
    print(f"images_per_second_1_core: {one:.1f} (median of {REPEATS}: "
          f"{', '.join(f'{v:.1f}' for v in ones)})")
    print(f"images_per_second_2_cores: {two:.1f} (ratio {two / one:.2f}x; median of {REPEATS}: "
          f"{', '.join(f'{v:.1f}' for v in twos)})")


def synthetic_plate(root: Path, shape=(256, 256)) -> Path:
    import tifffile

    from autotx_lib.imaging.plate import PlateGeometry, well_name

    folder = root / "Synthetic_384" / "TimePoint_1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    base = [sCMOS_frame(seed, shape) for seed in range(16)]
    geometry = PlateGeometry.from_wells(384)
    for r in range(geometry.rows):
        for c in range(geometry.columns):
            for site in range(1, 5):
                for w in (1, 2):
                    image = base[int(rng.integers(0, 16))]
                    tifffile.imwrite(folder / f"SYN_{well_name(r, c)}_s{site}_w{w}.tif", image)
    (folder / "SYN.HTD").write_text('"XWells", 24\n"YWells", 16\n')
    return folder.parent


def _numpy_reference(rounds: int = 400) -> float:
    """Pure-numpy CPU-bound work: in-place ufuncs on a 256 x 256 float64 array."""
    x = np.random.default_rng(0).random((256, 256)) + 1.0
    y = np.empty_like(x)
    for _ in range(rounds):
        np.multiply(x, 1.000001, out=y)
        np.sqrt(y, out=x)
        np.add(x, 0.5, out=x)
    return float(x[0, 0])


def plate_benchmark() -> None:
    from distributed import Client, wait

    from autotx_lib.imaging.plate import discover_plate, plate_qc, start_local_cluster

    batch = 32
    with tempfile.TemporaryDirectory() as tmp:
        plate = discover_plate(synthetic_plate(Path(tmp)))
        n = len(plate.records)
        start = time.perf_counter()
        plate_qc(plate, scheduler="sync")
        in_process = n / (time.perf_counter() - start)
        qc_rates: dict[int, list[float]] = {1: [], 2: []}
        reference_rates: dict[int, list[float]] = {1: [], 2: []}
        tasks = n // batch  # as many reference tasks as plate batches
        for workers in (1, 2):
            with start_local_cluster(workers) as cluster, Client(cluster) as client:
                plate_qc(plate, scheduler=client, batch_size=batch)  # warm the workers up
                wait(client.map(_numpy_reference, range(workers * 2), pure=False))
                for _ in range(REPEATS):
                    start = time.perf_counter()
                    table = plate_qc(plate, scheduler=client, batch_size=batch)
                    qc_rates[workers].append(len(table) / (time.perf_counter() - start))
                    start = time.perf_counter()
                    wait(client.map(_numpy_reference, range(tasks), pure=False))
                    reference_rates[workers].append(tasks / (time.perf_counter() - start))
    one, two = statistics.median(qc_rates[1]), statistics.median(qc_rates[2])
    ref_one, ref_two = statistics.median(reference_rates[1]), statistics.median(reference_rates[2])

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values)

    print(f"plate_384x4x2_256px_2_workers_vs_1: {two / one:.2f}x "
          f"({n} images, {batch} a task, median of {REPEATS}: 1 worker {one:.0f} images/s "
          f"[{listed(qc_rates[1])}], 2 workers {two:.0f} images/s [{listed(qc_rates[2])}]; "
          f"in-process sync {in_process:.0f} images/s)")
    print(f"numpy_reference_2_workers_vs_1: {ref_two / ref_one:.2f}x "
          f"(same clusters, {tasks} tasks, median of {REPEATS}: 1 worker {ref_one:.1f} tasks/s "
          f"[{', '.join(f'{v:.1f}' for v in reference_rates[1])}], 2 workers {ref_two:.1f} "
          f"tasks/s [{', '.join(f'{v:.1f}' for v in reference_rates[2])}]); plate QC reaches "
          f"{(two / one - 1) / max(ref_two / ref_one - 1, 1e-9):.0%} of the machine's own gain")


REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 3

if __name__ == "__main__":
    print(f"cpus: {os.cpu_count()}; {load()}")
    metrics_benchmark()
    plate_benchmark()
    print(f"after: {load()}")
