"""Plate-QC speed, as ratios against references measured in the same run.

1. The CellProfiler set (FocusScore, LocalFocusScore at scale 20, PowerLogLogSlope,
   PercentMaximal/Minimal, intensity statistics) on a 2160 x 2160 uint16 frame:
   ``autotx_lib.imaging.qc`` vs the way CellProfiler 4.2 computes it
   (``_cellprofiler_reference``), values checked equal to 1e-9 relative. Also images/s
   on 1 and 2 cores (2 processes, one image each at a time).
2. A synthetic 384-well plate (4 fields, 2 channels, 256 x 256): ``plate_qc`` on a
   dask LocalCluster of 2 one-thread workers vs 1.

Run: ``.venv/bin/python benchmarks/qc.py``
"""

from __future__ import annotations

import os
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


def _measure_many(seed: int, count: int = 8) -> float:
    """Images per second of one worker measuring ``count`` frames (synthesis not timed)."""
    image = sCMOS_frame(seed)
    start = time.perf_counter()
    for _ in range(count):
        qc.measure_image(image, "cellprofiler")
    return count / (time.perf_counter() - start)


def images_per_second(workers: int) -> float:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(_measure_many, range(workers)))  # workers run at the same time


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
    one = images_per_second(1)
    two = images_per_second(2) if (os.cpu_count() or 1) >= 2 else float("nan")
    print(f"images_per_second_1_core: {one:.1f}")
    print(f"images_per_second_2_cores: {two:.1f} (ratio {two / one:.2f}x)")


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


def plate_benchmark() -> None:
    from distributed import Client, LocalCluster

    from autotx_lib.imaging.plate import discover_plate, plate_qc

    with tempfile.TemporaryDirectory() as tmp:
        plate = discover_plate(synthetic_plate(Path(tmp)))
        timings = {}
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                plate_qc(plate, scheduler=client, batch_size=32)  # warm the workers up
                start = time.perf_counter()
                table = plate_qc(plate, scheduler=client, batch_size=32)
                timings[workers] = time.perf_counter() - start
        start = time.perf_counter()
        plate_qc(plate, n_workers=2)
        threads = time.perf_counter() - start
    n = len(table)
    print(f"plate_384x4x2_256px_2_workers_vs_1: {timings[1] / timings[2]:.2f}x "
          f"({n} images: 1 worker {n / timings[1]:.0f} images/s, "
          f"2 workers {n / timings[2]:.0f} images/s; default threads x2 {n / threads:.0f} images/s)")


if __name__ == "__main__":
    print(f"cpus: {os.cpu_count()}")
    metrics_benchmark()
    plate_benchmark()
