"""Reader benchmarks: our backends against Bio-Formats and bioio, measured in the same run.

Prints ``name: value`` lines:

- ``open_first_plane_ms[<reader>:<file>]``: open a file, read its first plane, its pixel
  sizes and channel names (what ``autotx info`` or a viewer needs first), warm, median of
  ``--repeat`` runs, for ours (native backend), bioio (its czi, nd2, lif, ome-tiff and
  tifffile plugins) and Bio-Formats; then ``open_first_plane_speedup_vs_bioio[<file>]``
  (bioio's time over ours: above 1 means we are faster). A reader that cannot read a file
  prints ``cannot read`` and the reason.
- ``first_ome_parse_ms[<reader>]``: the first OME metadata of a process (an OME-TIFF's
  pixel sizes and channel names, after the imports), each in a fresh interpreter.
- ``zstack_all_planes_*``: every plane of an OME-TIFF z-stack (synthetic 120 x 512 x 512
  uint16, and the real bead PSF re-saved as OME-TIFF): ours, bioio and Bio-Formats, with
  speed ratios and a pixel-equality check.
- ``dask_max_peak_mb``: peak traced memory of ``dask_data.max()`` over a 400 MB stack.

bioio comes from the ``bench`` extra (``pip install "autotx_lib[bench]"``); without it its
lines say so. Run: ``.venv/bin/python benchmarks/readers.py [--repeat 5] [--quick]``
(``--quick`` skips the z-stack and dask parts).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

from autotx_lib.imaging.readers import open_image

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "sampledata"
FILES = [
    "ome-tiff/aicsimageio_s_1_t_1_c_1_z_1.ome.tiff",
    "ome-tiff/ome_sample_multi-channel.ome.tif",
    "MM:1.4compatTest_3_MMStack_1-Pos_000_000.ome.tif",
    "hcs/ImageXpress_9987_Plate_3435/TimePoint_1/9987_B02_s1_w1.TIF",
    "zstack/pycudadecon_psf_bead_LLS.tif",
    "czi/aicsimageio_s_1_t_1_c_1_z_1.czi",
    "czi/czitools_CellDivision_T3_Z5_CH2_X240_Y170.czi",
    "czi/czitools_S3_1Pos_2Mosaic_T1_Z1_CH1.czi",
    "hcs/czi_CD7_wells_D6-D7/WellD6-7_S2.czi",
    "nd2/arcadia_example-multichannel.nd2",
    "nd2/arcadia_example-zstack.nd2",
    "nd2/arcadia_example-timelapse.nd2",
    "lif/readlif_testdata_2channel_xz.lif",
    "lif/readlif_LeicaLASX_wavelength-sweep_example.lif",
]


def bioio_module():
    """bioio, or None when the bench extra is not installed."""
    try:
        import bioio
    except ImportError:
        return None
    return bioio


def first_look(reader: str, path: Path) -> None:
    """Open, first plane, pixel sizes, channel names: with ours, bioio or Bio-Formats."""
    if reader == "bioio":
        image = bioio_module().BioImage(path)
        image.get_image_data("YX", T=0, C=0, Z=0)
        image.physical_pixel_sizes, image.channel_names  # noqa: B018
        return
    image = open_image(path, backend="bioformats" if reader == "bioformats" else None)
    image.plane()
    image.physical_pixel_sizes, image.channel_names  # noqa: B018
    image.close()


def median_ms(fn, repeat: int) -> float:
    fn()  # warm: imports, JVM, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def compare_open(paths: list[Path], repeat: int) -> None:
    readers = ["ours", "bioformats"] + (["bioio"] if bioio_module() else [])
    if not bioio_module():
        print('bioio: not installed (pip install "autotx_lib[bench]"); its lines are skipped')
    for path in paths:
        times = {}
        for reader in readers:
            try:
                times[reader] = median_ms(lambda r=reader, p=path: first_look(r, p), repeat)
            except Exception as error:  # a peer that cannot read a file: say so, go on
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                print(f"open_first_plane_ms[{reader}:{path.name}]: cannot read "
                      f"({type(error).__name__}: {reason[:120]})")
                continue
            print(f"open_first_plane_ms[{reader}:{path.name}]: {times[reader]:.1f}")
        if "ours" in times and "bioio" in times:
            print(f"open_first_plane_speedup_vs_bioio[{path.name}]: "
                  f"{times['bioio'] / times['ours']:.2f}")


FIRST_PARSE = """
import sys, time, warnings
warnings.simplefilter("ignore")
path = sys.argv[2]
import ome_types, tifffile
if sys.argv[1] == "ours":
    from autotx_lib.imaging.readers import open_image
    start = time.perf_counter()
    image = open_image(path)
else:
    import bioio, bioio_ome_tiff
    start = time.perf_counter()
    image = bioio.BioImage(path, reader=bioio_ome_tiff.Reader)
image.physical_pixel_sizes, image.channel_names
print(1000 * (time.perf_counter() - start))
"""


def compare_first_ome_parse(path: Path, repeat: int) -> None:
    """The first OME metadata of a fresh process (after imports), median over processes."""
    for reader in ["ours"] + (["bioio"] if bioio_module() else []):
        values = []
        for _ in range(max(3, repeat // 2)):
            result = subprocess.run([sys.executable, "-c", textwrap.dedent(FIRST_PARSE), reader,
                                     str(path)], capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                print(f"first_ome_parse_ms[{reader}]: failed ({result.stderr.strip()[-200:]})")
                break
            values.append(float(result.stdout.strip().splitlines()[-1]))
        else:
            print(f"first_ome_parse_ms[{reader}]: {statistics.median(values):.1f}")


def read_all(path: Path, reader: str) -> tuple[float, list[np.ndarray]]:
    """Open ``path`` and read every plane; return (seconds, planes)."""
    start = time.perf_counter()
    if reader == "bioio":
        image = bioio_module().BioImage(path)
        d = image.dims
        planes = [image.get_image_data("YX", T=t, C=c, Z=z)
                  for t in range(d.T) for c in range(d.C) for z in range(d.Z)]
        return time.perf_counter() - start, planes
    img = open_image(path, backend="bioformats" if reader == "bioformats" else None)
    d = img.dims
    planes = [img.plane(t=t, c=c, z=z) for t in range(d.T) for c in range(d.C) for z in range(d.Z)]
    img.close()
    return time.perf_counter() - start, planes


def best_of(n: int, fn) -> tuple[float, object]:
    results = [fn() for _ in range(n)]
    return min(r[0] for r in results), results[0][1]


def compare_zstacks(tmp: Path, stack: np.ndarray) -> None:
    import tifffile

    synthetic = tmp / "zstack.ome.tif"
    tifffile.imwrite(synthetic, stack, ome=True, metadata={"axes": "ZYX"})
    psf = tmp / "psf.ome.tif"
    tifffile.imwrite(psf, tifffile.imread(SAMPLES / "zstack/pycudadecon_psf_bead_LLS.tif"),
                     ome=True, metadata={"axes": "ZYX"})
    readers = ["ours", "bioformats"] + (["bioio"] if bioio_module() else [])
    for label, path in (("synthetic_120x512x512", synthetic), ("psf_61x128x128", psf)):
        results = {r: best_of(3, lambda p=path, r=r: read_all(p, r)) for r in readers}
        t_ours, ours = results["ours"]
        for reader, (seconds, planes) in results.items():
            print(f"zstack_all_planes_{reader}_s[{label}]: {seconds:.4f}")
            if reader != "ours":
                print(f"zstack_all_planes_speedup_vs_{reader}[{label}]: {seconds / t_ours:.1f}")
                same = len(planes) == len(ours) and all(map(np.array_equal, planes, ours))
                print(f"zstack_all_planes_same_pixels_as_{reader}[{label}]: {same}")


def dask_peak(tmp: Path, stack: np.ndarray) -> None:
    import tifffile

    big = tmp / "big.ome.tif"
    tifffile.imwrite(big, np.broadcast_to(stack[:1], (800, 512, 512)), ome=True,
                     metadata={"axes": "ZYX"})
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


def sample_paths(tmp: Path) -> list[Path]:
    """FILES as paths; the Micro-Manager set is gunzipped into ``tmp``."""
    folder = tmp / "mm"
    folder.mkdir()
    for gz in (SAMPLES / "ome-tiff" / "micromanager14_multipos").glob("*.gz"):
        with gzip.open(gz) as src, open(folder / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    return [folder / rel[3:] if rel.startswith("MM:") else SAMPLES / rel for rel in FILES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="skip the z-stack and dask parts")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # peers' deprecation chatter would drown the results
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = sample_paths(tmp)
        open_image(paths[0], backend="bioformats").plane()  # start the JVM before timing
        compare_open(paths, args.repeat)
        compare_first_ome_parse(SAMPLES / FILES[0], args.repeat)
        if not args.quick:
            stack = np.random.default_rng(0).integers(0, 4096, (120, 512, 512), dtype=np.uint16)
            compare_zstacks(tmp, stack)
            dask_peak(tmp, stack)


if __name__ == "__main__":
    main()
