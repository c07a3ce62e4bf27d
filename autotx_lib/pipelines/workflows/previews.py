"""``previews``: a PNG maximum-intensity projection and a small thumbnail per image/scene.

For the stack browser and the hub. Each scene of each image file the native readers know
(TIFF/OME-TIFF, CZI, ND2, LIF; Bio-Formats formats with ``params = {bioformats = true}``)
is projected over z at the first time point, its channels coloured from the metadata and
contrast-stretched (0.1-99.9 percentiles), and written as
``<results>/previews/<file>[_s<scene>].png`` (longest side at most ``size``, default
1024) with a ``..._thumb.png`` (``thumb_size``, default 128). Files are previewed in
parallel as dask tasks; an unreadable file is counted and named, never fatal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from autotx_lib.pipelines.context import RunContext
from autotx_lib.pipelines.registry import workflow

#: Suffixes read by the native readers (no JVM on the workers).
NATIVE_SUFFIXES = (".tif", ".tiff", ".czi", ".nd2", ".lif", ".btf", ".lsm", ".stk")


def image_files(folder: Path, bioformats: bool = False) -> list[Path]:
    """The image files below ``folder`` a preview is made of, in path order."""
    suffixes: tuple[str, ...] = NATIVE_SUFFIXES
    if bioformats:
        from autotx_lib.imaging.readers.bioformats import BIOFORMATS_SUFFIXES

        suffixes = suffixes + tuple(f".{s.lstrip('.')}" for s in BIOFORMATS_SUFFIXES)
    if folder.is_file():
        return [folder]
    found = []
    for root, _dirs, names in os.walk(folder):
        found.extend(Path(root) / n for n in names if n.lower().endswith(suffixes))
    return sorted(found)


def _png(rgb: np.ndarray, size: int) -> bytes:
    import imagecodecs

    step = max(1, int(np.ceil(max(rgb.shape[:2]) / size)))
    return bytes(imagecodecs.png_encode(np.ascontiguousarray(rgb[::step, ::step])))


def _projection(image: Any) -> np.ndarray:
    """RGB (Y, X, 3) uint8: each channel's MIP over z at t=0, coloured and stretched."""
    from autotx_lib.imaging.composite import composite_rgba, image_channel_colors

    dims = dict(image.dims.items())
    planes = []
    for c in range(dims.get("C", 1)):
        stack = [np.asarray(image.plane(t=0, c=c, z=z)) for z in range(dims.get("Z", 1))]
        planes.append(np.max(np.stack(stack), axis=0))
    limits = []
    for plane in planes:
        low, high = np.percentile(plane, [0.1, 99.9]) if plane.size else (0.0, 1.0)
        limits.append((float(low), float(high) if high > low else float(low) + 1.0))
    colors = image_channel_colors(image) if len(planes) > 1 else ["white"]
    rgba = composite_rgba(planes, colors[: len(planes)], limits)
    return rgba.view(np.uint8).reshape(*rgba.shape, 4)[..., :3]


def preview_file(task: tuple[str, str, str, int, int]) -> dict[str, Any]:
    """Write the previews of every scene of one file (a dask task); returns what it did."""
    from autotx_lib.imaging.readers import open_image

    path, root, out, size, thumb_size = task
    relative = os.path.relpath(path, root) if path != root else Path(path).name
    stem = Path(out) / relative
    written = []
    try:
        image = open_image(path)
        scenes = len(image.scenes)
        for index in range(scenes):
            image.set_scene(index)
            rgb = _projection(image)
            name = f"{stem}_s{index}" if scenes > 1 else str(stem)
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            Path(f"{name}.png").write_bytes(_png(rgb, size))
            Path(f"{name}_thumb.png").write_bytes(_png(rgb, thumb_size))
            written.append(f"{name}.png")
    except Exception as error:  # noqa: BLE001 - an unreadable file is reported, not fatal
        return {"path": path, "previews": written, "error": f"{type(error).__name__}: {error}"}
    return {"path": path, "previews": written, "error": None}


def run_previews(context: RunContext) -> dict[str, Any]:
    """A PNG maximum-intensity projection and thumbnail per image/scene of the dataset."""
    params = context.params
    with context.step("list images") as step:
        files = image_files(context.path, bool(params.get("bioformats", False)))
        step["message"] = f"{len(files)} image files"
    out = context.results / "previews"
    tasks = [(str(f), str(context.path), str(out), int(params.get("size", 1024)),
              int(params.get("thumb_size", 128))) for f in files]
    with context.step("project") as step:
        done = context.map(preview_file, tasks)
        failed = [d for d in done if d["error"]]
        step["message"] = f"{sum(len(d['previews']) for d in done)} previews, " \
                          f"{len(failed)} unreadable files"
    return {"images": len(files), "previews": sum(len(d["previews"]) for d in done),
            "unreadable": len(failed),
            "unreadable_files": [f"{Path(d['path']).name}: {d['error']}"[:300]
                                 for d in failed[:20]],
            "folder": str(out)}


PREVIEWS = workflow("previews", version="1")(run_previews)
