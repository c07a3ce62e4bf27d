"""Reader benchmarks: native fast paths against Bio-Formats, measured in the same run.

Prints ``name: value`` lines:

- ``zstack_all_planes_*``: every plane of an OME-TIFF z-stack (a synthetic 120 x 512 x 512
  uint16 stack written with tifffile, and the real bead PSF re-saved as OME-TIFF), native vs
  Bio-Formats, with the speed ratio and a pixel-equality check.
- ``open_first_plane_ms_*``: opening a file and reading its first plane, warm JVM, per backend
  and sample file (median of 5).
- ``dask_max_peak_mb``: peak traced memory of ``dask_data.max()`` over a 400 MB stack, against
  the stack and chunk sizes.

Run: ``.venv/bin/python benchmarks/readers.py``
"""

from __future__ import annotations

import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from autotx_lib.imaging.readers import open_image

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "sampledata"


def read_all(path: Path, backend: str | None) -> tuple[float, list[np.ndarray]]:
    """Open ``path`` and read every plane with ``plane()``; return (seconds, planes)."""
    start = time.perf_counter()
    img = open_image(path, backend=backend)
    d = img.dims
    planes = [img.plane(t=t, c=c, z=z)
              for t in range(d.T) for c in range(d.C) for z in range(d.Z)]
    img.close()
    return time.perf_counter() - start, planes


def best_of(n: int, fn) -> tuple[float, object]:
    results = [fn() for _ in range(n)]
    return min(r[0] for r in results), results[0][1]


def main() -> None:
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        synthetic = tmp / "zstack.ome.tif"
        stack = rng.integers(0, 4096, (120, 512, 512), dtype=np.uint16)
        tifffile.imwrite(synthetic, stack, ome=True, metadata={"axes": "ZYX"})
        psf = tmp / "psf.ome.tif"
        tifffile.imwrite(psf, tifffile.imread(SAMPLES / "zstack/pycudadecon_psf_bead_LLS.tif"),
                         ome=True, metadata={"axes": "ZYX"})
        open_image(synthetic, backend="bioformats").plane()  # warm the JVM
        for label, path in (("synthetic_120x512x512", synthetic), ("psf_61x128x128", psf)):
            t_native, native = best_of(3, lambda p=path: read_all(p, None))
            t_bf, bf = best_of(3, lambda p=path: read_all(p, "bioformats"))
            print(f"zstack_all_planes_native_s[{label}]: {t_native:.4f}")
            print(f"zstack_all_planes_bioformats_s[{label}]: {t_bf:.4f}")
            print(f"zstack_all_planes_speedup_native_vs_bioformats[{label}]: {t_bf / t_native:.1f}")
            same = len(native) == len(bf) and all(map(np.array_equal, native, bf))
            print(f"zstack_all_planes_same_pixels[{label}]: {same}")

        files = [
            "ome-tiff/aicsimageio_s_1_t_1_c_1_z_1.ome.tiff",
            "czi/czitools_CellDivision_T3_Z5_CH2_X240_Y170.czi",
            "nd2/arcadia_example-multichannel.nd2",
            "lif/readlif_testdata_2channel_xz.lif",
        ]
        for rel in files:
            path = SAMPLES / rel
            for backend in (None, "bioformats"):
                times, name = [], ""
                for _ in range(5):
                    start = time.perf_counter()
                    img = open_image(path, backend=backend)
                    img.plane()
                    times.append(time.perf_counter() - start)
                    name = img.name
                    img.close()
                print(f"open_first_plane_ms[{name}:{path.name}]: {1000 * statistics.median(times):.1f}")

        big = tmp / "big.ome.tif"
        big_stack = np.broadcast_to(stack[:1], (800, 512, 512))
        tifffile.imwrite(big, big_stack, ome=True, metadata={"axes": "ZYX"})
        img = open_image(big)
        lazy = img.dask_data
        chunk_mb = 512 * 512 * 2 / 1e6
        tracemalloc.start()
        maximum = lazy.max().compute(scheduler="threads", num_workers=2)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"dask_max_stack_mb: {lazy.nbytes / 1e6:.0f}")
        print(f"dask_max_chunk_mb: {chunk_mb:.2f}")
        print(f"dask_max_peak_mb: {peak / 1e6:.1f}")
        print(f"dask_max_peak_over_chunk: {peak / 1e6 / chunk_mb:.1f}")
        print(f"dask_max_peak_over_stack: {peak / lazy.nbytes:.4f}")
        print(f"dask_max_correct: {int(maximum) == int(stack[0].max())}")
        img.close()


if __name__ == "__main__":
    main()
