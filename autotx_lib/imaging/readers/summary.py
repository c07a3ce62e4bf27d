"""A text summary of a microscopy file: what ``autotx info`` prints."""

from __future__ import annotations

from pathlib import Path

from autotx_lib.imaging.readers.api import open_image


def summarize(path: str | Path, *, backend: str | None = None, max_scenes: int = 20) -> str:
    """Describe a file: backend, scenes, dims, dtype, pixel sizes, channels, plate.

    Parameters
    ----------
    path : str or Path
        The file.
    backend : str, optional
        Force a backend (see :func:`open_image`).
    max_scenes : int, optional
        List at most this many scenes in detail.

    Returns
    -------
    text : str
        Several ``key: value`` lines, no trailing newline.

    Raises
    ------
    autotx_lib.errors.ReaderError
        If the file cannot be read.
    """
    with open_image(path, backend=backend) as image:
        lines = [
            f"file: {Path(path)}",
            f"backend: {image.name}",
            f"scenes: {len(image.scenes)}",
        ]
        for scene in image.scenes[:max_scenes]:
            image.set_scene(scene.index)
            sizes = image.physical_pixel_sizes
            px = ", ".join(
                f"{axis}={value:.4g} um" for axis, value in zip("ZYX", sizes, strict=True)
                if value is not None
            ) or "unknown"
            lines.append(
                f"  [{scene.index}] {scene}: {image.dims} {image.dtype}; pixel size {px}; "
                f"channels {', '.join(image.channel_names)}"
            )
        if len(image.scenes) > max_scenes:
            lines.append(f"  ... {len(image.scenes) - max_scenes} more scene(s)")
        plate = image.plate
        if plate is not None:
            fields = sum(len(w.fields) for w in plate.wells)
            lines.append(
                f"plate: {plate.name} ({plate.rows}x{plate.columns}), {len(plate.wells)} well(s) "
                f"with images, {fields} field(s)"
            )
        return "\n".join(lines)
