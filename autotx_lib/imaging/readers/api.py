"""``open_image``: pick a backend from the registry, try them in order, explain failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotx_lib.errors import MissingDependencyError, ReaderError
from autotx_lib.imaging.readers.base import BackendRefusal, Image
from autotx_lib.imaging.readers.registry import registry


def open_image(
    path: str | Path,
    scene: int | str | None = None,
    backend: str | None = None,
    **options: Any,
) -> Image:
    """Open a microscopy file with the best available backend.

    Parameters
    ----------
    path : str or Path
        The file. For multi-file sets open the master file (the ``.HTD`` of an ImageXpress
        plate, the first position of a Micro-Manager set). Bio-Formats ``.fake`` names need
        not exist on disk.
    scene : int or str, optional
        Scene to select (index, id or name); default the first.
    backend : str, optional
        Force one backend by name (``"bioformats"``, ``"tifffile"``, ``"nd2"``,
        ``"readlif"``, ``"czifile"`` or a plugin's); default: the registry's order for the
        suffix, native fast path first and Bio-Formats last.
    **options
        Passed to the backend's constructor.

    Returns
    -------
    image : Image

    Raises
    ------
    autotx_lib.errors.ReaderError
        If the file is missing, empty, or no backend can read it; ``error.tried`` maps each
        backend tried to why it failed.
    ValueError
        If ``backend`` names no registered backend.

    Examples
    --------
    >>> img = open_image("stack.ome.tif")  # doctest: +SKIP
    >>> img.dims, img.channel_names, img.plane(z=3).mean()  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    is_fake = path.suffix.lower() == ".fake"
    if not is_fake:
        if not path.exists():
            raise ReaderError(path, hint="no such file; check the path (and that the share is mounted)")
        if path.is_dir():
            raise ReaderError(path, hint=_folder_hint(path))
        if path.stat().st_size == 0:
            raise ReaderError(
                path,
                hint="the file is empty (0 bytes): it was not written completely; copy it again "
                     "from the instrument",
            )
    specs = [registry.get(backend)] if backend else registry.candidates(path)
    head = _head(path)
    tried: dict[str, str] = {}
    for spec in specs:
        try:
            cls = spec.load()
            image = cls(path, **options)
        except BackendRefusal as error:
            tried[spec.name] = _first_line("; ".join(error.tried.values()) or str(error))
            continue
        except MissingDependencyError as error:
            tried[spec.name] = _first_line(str(error))
            continue
        except Exception as error:  # any backend failure is a reason, never a crash
            if isinstance(error, ReaderError):
                tried[spec.name] = _first_line("; ".join(error.tried.values()) or str(error))
            else:
                tried[spec.name] = _first_line(f"{type(error).__name__}: {error}")
            if not backend and spec.native and spec.recognises(head):
                damaged = (
                    f"The file starts like a {spec.name} file but cannot be read: it is "
                    "probably truncated or damaged; compare its size with the original and "
                    "copy it again (other backends were not tried, as they would return "
                    "garbage; force one with backend='bioformats')"
                )
                hint = _MULTIFILE_HINTS.get(path.suffix.lower().lstrip("."), damaged)
                raise ReaderError(path, tried, hint) from error
            continue
        if scene is not None:
            image.set_scene(scene)
        return image
    hint = _MULTIFILE_HINTS.get(path.suffix.lower().lstrip("."), (
        "None of these backends could read it: check the file is complete (compare its size "
        "with the original) and of a microscopy format Bio-Formats supports"
    ))
    raise ReaderError(path, tried, hint)


#: What to check when the master file of a multi-file set cannot be read.
_MULTIFILE_HINTS = {
    "htd": "An ImageXpress .HTD needs its TIFFs (<plate>_<well>_s<site>_w<wave>.TIF) in the "
           "same folder or in TimePoint_N/ZStep_N folders beside it; copy the whole plate folder",
    "wpi": "A Yokogawa CellVoyager .wpi needs MeasurementData.mlf, MeasurementDetail.mrf and "
           "the image files in the same folder; copy the whole measurement folder (or open "
           "one image file)",
    "mrf": "A Yokogawa CellVoyager measurement needs MeasurementData.mlf and the image files "
           "in the same folder; copy the whole measurement folder",
    "mlf": "A Yokogawa CellVoyager measurement needs MeasurementDetail.mrf and the image files "
           "in the same folder; copy the whole measurement folder",
}


def _folder_hint(folder: Path) -> str:
    """What to open instead of a folder: its plate file if it has one."""
    plate_files = sorted(  # an ImageXpress .HTD may sit in TimePoint_1 only
        p for pattern in ("*.HTD", "*.htd", "*.wpi", "MeasurementDetail.mrf", "*/*.HTD", "*/*.htd")
        for p in folder.glob(pattern)
    )
    if plate_files:
        return f"this is a folder; open its plate file {plate_files[0]}"
    return "this is a folder; open a file in it (for an ImageXpress plate, its .HTD file)"


def _first_line(text: str) -> str:
    """Backends' reasons go into one-line messages: keep the first line only."""
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _head(path: Path, size: int = 16) -> bytes:
    """The first bytes of a file (empty for fake or unreadable files)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""
