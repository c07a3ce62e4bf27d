"""A text summary of a microscopy file: what ``autotx info`` prints."""

from __future__ import annotations

from pathlib import Path

from autotx_lib.imaging.readers.api import open_image
from autotx_lib.imaging.readers.types import Channel


def summarize(path: str | Path, *, backend: str | None = None, max_scenes: int = 20) -> str:
    """Describe a file: backend, scenes, dims, pixel sizes, channels, time, objective, plate.

    Metadata parts that could not be read end the text as ``warning:`` lines.

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
            stack, rows, columns = image.scan_axes
            scan = "" if image.scan_axes == "ZYX" else (
                f"; {columns}{rows} scan: plane rows are {rows}"
                + (f", the Z index steps along {stack}" if image.dims.Z > 1 else ""))
            lines.append(
                f"  [{scene.index}] {scene}: {image.dims} {image.dtype}; pixel size {px}{scan}; "
                f"channels {', '.join(_channel(ch) for ch in image.channels)}"
            )
        image.set_scene(0)
        when, objective = image.acquisition_time, image.objective
        if when is not None:
            lines.append(f"acquired: {when.isoformat(sep=' ', timespec='seconds')}")
        if objective is not None:
            lines.append("objective: " + ", ".join(filter(None, [
                objective.name,
                f"{objective.magnification:g}x" if objective.magnification else None,
                f"NA {objective.numerical_aperture:g}" if objective.numerical_aperture else None,
                objective.immersion])))
        if len(image.scenes) > max_scenes:
            lines.append(f"  ... {len(image.scenes) - max_scenes} more scene(s)")
        plate = image.plate
        if plate is not None:
            fields = sum(len(w.fields) for w in plate.wells)
            lines.append(
                f"plate: {plate.name} ({plate.rows}x{plate.columns}), {len(plate.wells)} well(s) "
                f"with images, {fields} field(s)"
            )
        missing = getattr(image, "missing_from_export", None)  # ImageXpress partial exports
        if missing:
            lines.append("partial export: the plate file declares more than the files hold: "
                         + "; ".join(missing))
        lines += [f"warning: {problem}" for problem in image.metadata_problems]
        return "\n".join(lines)


def _channel(channel: Channel) -> str:
    """``DAPI`` or ``DAPI (ex 353 / em 465 nm)``."""
    light = " / ".join(f"{label} {value:g}" for label, value in
                       (("ex", channel.excitation_nm), ("em", channel.emission_nm)) if value)
    return f"{channel.name} ({light} nm)" if light else channel.name
