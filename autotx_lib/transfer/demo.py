"""A small facility in a folder, for ``autotx demo`` and for trying the agent from a notebook.

:func:`build_demo_facility` makes an instrument PC's incoming folder with a few realistic
acquisitions (a z-stack, a time-lapse, an ImageXpress-style plate export, and one from
a user without a folder at the destination) and a destination share, and returns the
:class:`~autotx_lib.config.Config` that connects them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autotx_lib.config import Config

DEMO_USERS_AT_DESTINATION = ("alice", "bob")


def _blobs(rng: np.random.Generator, shape: tuple[int, int], count: int = 12) -> np.ndarray:
    """A fluorescence-like uint16 plane: Gaussian spots over camera noise."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = rng.normal(300, 20, shape)
    for _ in range(count):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        sigma = rng.uniform(3, 12)
        image += rng.uniform(500, 3000) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                                 / (2 * sigma ** 2))
    return np.clip(image, 0, 65535).astype(np.uint16)


def _write_image(path: Path, data: np.ndarray, axes: str) -> None:
    try:
        import tifffile
    except ImportError:  # the transfer half does not need the imaging extra
        path.with_suffix(".raw").write_bytes(data.tobytes())
        return
    tifffile.imwrite(path, data, metadata={"axes": axes}, ome=path.name.endswith(".ome.tif"))


def _zstack(folder: Path, rng: np.random.Generator, planes: int, size: int) -> None:
    folder.mkdir(parents=True)
    plane = _blobs(rng, (size, size))
    stack = np.stack([(plane * np.exp(-((z - planes / 2) / (planes / 4)) ** 2)).astype(np.uint16)
                      + rng.integers(0, 40, (size, size), dtype=np.uint16) for z in range(planes)])
    _write_image(folder / "HeLa_DAPI_zstack.ome.tif", stack, "ZYX")
    (folder / "acquisition.txt").write_text("objective: 63x/1.4 oil\nz-step: 0.3 um\n")


def _timelapse(folder: Path, rng: np.random.Generator, frames: int, size: int) -> None:
    folder.mkdir(parents=True)
    for t in range(frames):
        _write_image(folder / f"mito_t{t:03d}.tif", _blobs(rng, (size, size)), "YX")


def _plate(folder: Path, rng: np.random.Generator, size: int) -> None:
    timepoint = folder / "TimePoint_1"
    timepoint.mkdir(parents=True)
    wells = [f"{row}{col:02d}" for row in "BCD" for col in range(2, 10)]
    for well in wells:
        for site in (1, 2):
            for wavelength in (1, 2):
                _write_image(timepoint / f"9987_{well}_s{site}_w{wavelength}.tif",
                             _blobs(rng, (size, size), count=6), "YX")
    (folder / "9987.HTD").write_text('"HTSInfoFile", Version 1.0\n"XWells", 12\n"YWells", 8\n')


def build_demo_facility(root: Path, *, scale: float = 1.0, seed: int = 0) -> Config:
    """Create a demo facility under ``root`` and return its configuration.

    Parameters
    ----------
    root : Path
        An empty or new folder.
    scale : float
        Multiplies the data volume (1.0 is about 100 MB).
    seed : int
        Random seed: the same seed gives the same bytes.

    Returns
    -------
    config : Config
        incoming, managed and destination under ``root``; short quiet period.
    """
    rng = np.random.default_rng(seed)
    pc = root / "instrument-pc"
    incoming, managed, storage = pc / "incoming", pc / "managed", root / "central-storage"
    for user in DEMO_USERS_AT_DESTINATION:
        (storage / user).mkdir(parents=True, exist_ok=True)
    size = max(64, int(512 * scale ** 0.5))
    _zstack(incoming / "alice" / "HeLa_DAPI_63x", rng, planes=60, size=size)
    _timelapse(incoming / "alice" / "mitochondria_timelapse", rng, frames=60, size=size)
    _plate(incoming / "bob" / "Plate_3435", rng, size=max(64, size // 2))
    _timelapse(incoming / "carol" / "first_test", rng, frames=3, size=64)
    config = Config(incoming=incoming, managed=managed, destination=storage,
                    host_alias="demo-microscope", destination_alias="demo central storage",
                    readiness={"quiet_seconds": 1.0}, gate={"max_cpu_percent": 100})
    (root / "autotx.toml").write_text(
        f'incoming = "{incoming}"\nmanaged = "{managed}"\ndestination = "{storage}"\n'
        'host_alias = "demo-microscope"\n\n[readiness]\nquiet_seconds = 1.0\n\n'
        '[gate]\nmax_cpu_percent = 100  # a demo runs on a busy machine; instruments use 25\n')
    return config


def disk_usage(root: Path) -> int:
    """Bytes in the files under ``root`` (what removing a demo facility frees)."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
