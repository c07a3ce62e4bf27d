"""Plates: well geometry, vendor file-name patterns, and plate quality control on dask.

A screening plate arrives as a folder of files named by the instrument (or as one
multi-scene file). :func:`discover_plate` recognises the layout and lists every image
with its well, field, channel, z and time point; :func:`plate_qc` measures each image
with :mod:`autotx_lib.imaging.qc` in parallel and gives each image a verdict (ok,
empty, dark, bright, out of focus, saturated, unreadable; see
:mod:`autotx_lib.imaging.qc_verdicts`); :func:`well_summary` and :func:`plate_heatmap`
summarise the result.

Recognised layouts (tried in this order; the one matching the most files wins):

===============  ====================================================================
vendor           how it is recognised
===============  ====================================================================
cellvoyager      ``MeasurementData.mlf`` (Yokogawa CV7000/CV8000 measurement list)
opera            ``r01c01f01p01-ch1sk1fk1fl1.tiff`` (PerkinElmer Opera Phenix, Operetta)
imagexpress      ``<plate>_A01_s1_w1.tif`` under ``TimePoint_N``/``ZStep_N`` (MetaXpress)
cellomics        ``<plate>_D03f00d0.tif`` (Thermo Cellomics ArrayScan)
readers          a well-plate file the readers know: Zeiss CZI with scenes named by
                 well, Bio-Formats plate files (``.fake`` SPW, ...)
pattern          a regular expression you give, with named groups
===============  ====================================================================

Numbers (field, z, t, channel) keep the vendor's own numbering; a number a layout
does not name is 0. ``row`` and ``column`` are 0-based (well A01 is row 0, column 0).
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autotx_lib.errors import PlateNotFoundError  # re-exported: imaging.plate.PlateNotFoundError
from autotx_lib.imaging.qc_verdicts import decide_verdicts

__all__ = [
    "PLATE_FORMATS",
    "VENDOR_PATTERNS",
    "PlateGeometry",
    "ImageRecord",
    "Plate",
    "PlateNotFoundError",
    "row_label",
    "well_name",
    "parse_well",
    "discover_plate",
    "plate_qc",
    "QC_WORKER_ENVIRONMENT",
    "start_local_cluster",
    "well_summary",
    "plate_heatmap",
    "read_record_planes",
]

logger = logging.getLogger(__name__)

#: Standard microplate formats: number of wells -> (rows, columns).
PLATE_FORMATS: dict[int, tuple[int, int]] = {
    6: (2, 3),
    12: (3, 4),
    24: (4, 6),
    48: (6, 8),
    96: (8, 12),
    384: (16, 24),
    1536: (32, 48),
}

#: Vendor file-name patterns (matched against the file name, case-insensitively).
VENDOR_PATTERNS: dict[str, str] = {
    "opera": (
        r"^r(?P<row>\d{2})c(?P<col>\d{2})f(?P<field>\d{2,})p(?P<z>\d{2,})"
        r"-ch(?P<channel>\d+)sk(?P<t>\d+)fk\d+fl\d+\.tiff?$"
    ),
    "imagexpress": (
        r"^(?P<plate>.+?)_(?P<well>[A-Z]{1,2}\d{1,2})(?:_s(?P<field>\d+))?"
        r"(?:_w(?P<channel>\d+))?(?:_[0-9A-F]{8}-[0-9A-F-]{27})?\.tiff?$"
    ),
    "cellomics": (
        r"^(?P<plate>.+)_(?P<well>[A-Z]{1,2}\d{2})f(?P<field>\d{2,})d(?P<channel>\d+)"
        r"\.(?:tiff?|c01)$"
    ),
}

_READER_SUFFIXES = (".czi", ".fake", ".xdce", ".wpi", ".mrf", ".htd", ".nd2", ".lif")
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".c01")


# --- wells and geometry -------------------------------------------------------------


def row_label(row: int) -> str:
    """The letter(s) of a 0-based plate row: 0 -> ``A``, 25 -> ``Z``, 26 -> ``AA``, 31 -> ``AF``.

    Examples
    --------
    >>> row_label(0), row_label(7), row_label(31)
    ('A', 'H', 'AF')
    """
    if row < 0:
        raise ValueError(f"row must be >= 0 (0-based); got {row}.")
    if row < 26:
        return chr(ord("A") + row)
    return chr(ord("A") + row // 26 - 1) + chr(ord("A") + row % 26)


def well_name(row: int, column: int, *, width: int = 2) -> str:
    """Format a well from 0-based row and column: ``(0, 0)`` -> ``"A01"``.

    Parameters
    ----------
    row, column : int
        0-based indices.
    width : int, optional
        Zero-padded width of the column number (2: ``A01``; 1: ``A1``).

    Examples
    --------
    >>> well_name(0, 0), well_name(15, 23), well_name(31, 47)
    ('A01', 'P24', 'AF48')
    """
    if column < 0:
        raise ValueError(f"column must be >= 0 (0-based); got {column}.")
    return f"{row_label(row)}{column + 1:0{width}d}"


_WELL_RE = re.compile(r"^\s*([A-Za-z]{1,2})\s*0*(\d{1,3})\s*$")
_RC_RE = re.compile(r"^\s*[rR]0*(\d{1,3})\s*[cC]0*(\d{1,3})\s*$")


def parse_well(name: str) -> tuple[int, int]:
    """Parse a well name into 0-based (row, column).

    Accepts ``A01``, ``A1``, ``a01``, ``AF48`` and the row/column form ``r01c01``.

    Examples
    --------
    >>> parse_well("A01"), parse_well("h12"), parse_well("AF48"), parse_well("r02c03")
    ((0, 0), (7, 11), (31, 47), (1, 2))
    """
    text = str(name)
    match = _RC_RE.match(text)
    if match:
        row, column = int(match.group(1)) - 1, int(match.group(2)) - 1
    else:
        match = _WELL_RE.match(text)
        if not match:
            raise ValueError(
                f"cannot parse well name {name!r}; expected a row letter (A..Z, AA..AF) and a "
                "column number, such as 'A01', 'P24' or 'AF48', or 'r01c01'."
            )
        letters = match.group(1).upper()
        row = ord(letters[-1]) - ord("A")
        if len(letters) == 2:
            row += (ord(letters[0]) - ord("A") + 1) * 26
        column = int(match.group(2)) - 1
    if row < 0 or column < 0:
        raise ValueError(f"well {name!r} has a column number below 1; columns start at 1 (A01).")
    return row, column


@dataclass(frozen=True)
class PlateGeometry:
    """Rows and columns of a plate.

    Examples
    --------
    >>> PlateGeometry.from_wells(384)
    PlateGeometry(wells=384, rows=16, columns=24)
    >>> PlateGeometry.fitting(1, 2).wells  # wells B03 and before fit a 6-well plate
    6
    """

    wells: int
    rows: int
    columns: int

    @classmethod
    def from_wells(cls, wells: int) -> PlateGeometry:
        """The standard plate with this many wells (6, 12, 24, 48, 96, 384 or 1536)."""
        if wells not in PLATE_FORMATS:
            raise ValueError(
                f"no standard plate has {wells} wells; choose one of {sorted(PLATE_FORMATS)}."
            )
        rows, columns = PLATE_FORMATS[wells]
        return cls(wells, rows, columns)

    @classmethod
    def fitting(cls, max_row: int, max_column: int) -> PlateGeometry:
        """The smallest standard plate that holds a well at 0-based (max_row, max_column).

        A layout bigger than 1536 wells gets a non-standard geometry of its own size.
        """
        for wells, (rows, columns) in sorted(PLATE_FORMATS.items()):
            if max_row < rows and max_column < columns:
                return cls(wells, rows, columns)
        return cls((max_row + 1) * (max_column + 1), max_row + 1, max_column + 1)

    def well_names(self) -> list[str]:
        """All wells, row by row: A01, A02, ..."""
        return [well_name(r, c) for r in range(self.rows) for c in range(self.columns)]

    def contains(self, row: int, column: int) -> bool:
        """Whether a 0-based (row, column) lies on this plate."""
        return 0 <= row < self.rows and 0 <= column < self.columns


# --- what a plate holds -----------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    """One source of image planes on a plate: a file, or one scene of a multi-scene file.

    ``channel``, ``z`` and ``t`` are what the file name says; a file holding several
    planes is expanded when read (see :func:`read_record_planes`).
    """

    path: str
    well: str
    row: int
    column: int
    field: int = 0
    channel: str = ""
    z: int = 0
    t: int = 0
    scene: int | None = None
    reader: str = "tifffile"  # "tifffile" or "open_image"


@dataclass
class Plate:
    """A discovered plate: its name, vendor layout, geometry and image records.

    ``geometry_guessed`` is True when no vendor metadata gave the plate format (it is
    then the smallest standard plate that holds the imaged wells); ``channel_names``
    maps the file names' channel codes to the names the metadata gives (``w1`` ->
    ``DAPI`` from an ImageXpress ``.HTD``).
    """

    name: str
    vendor: str
    geometry: PlateGeometry
    records: list[ImageRecord] = field(default_factory=list)
    root: str = ""
    geometry_guessed: bool = False
    channel_names: dict[str, str] = field(default_factory=dict)

    def channel_label(self, channel: str) -> str:
        """The channel's name from the metadata, else its code (``DAPI``, or ``w1``)."""
        return self.channel_names.get(channel, channel)

    @property
    def format_description(self) -> str:
        """``96-well plate`` or ``96-well plate (guessed: ...)``, for people."""
        text = f"{self.geometry.wells}-well plate"
        if self.geometry_guessed:
            text += " (guessed from the wells imaged: no plate format in the metadata)"
        return text

    @property
    def wells(self) -> list[str]:
        """The imaged wells, in plate order."""
        seen = {(r.row, r.column): r.well for r in self.records}
        return [seen[key] for key in sorted(seen)]

    def __repr__(self) -> str:
        return (
            f"Plate(name={self.name!r}, vendor={self.vendor!r}, {self.geometry.wells}-well, "
            f"{len(self.wells)} wells imaged, {len(self.records)} records)"
        )


def _int(value: str | None) -> int:
    return int(value) if value not in (None, "") else 0


def _record_from_match(
    match: re.Match, path: Path, extra: dict[str, Any] | None = None
) -> ImageRecord:
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    groups.update(extra or {})
    if "well" in groups:
        row, column = parse_well(groups["well"])
    elif "row" in groups and "col" in groups:
        raw_row = str(groups["row"])
        row = int(raw_row) - 1 if raw_row.isdigit() else parse_well(f"{raw_row}1")[0]
        column = int(groups["col"]) - 1
    else:
        raise ValueError(
            "the pattern must have a named group 'well' (e.g. (?P<well>[A-P]\\d{2})) or "
            "both 'row' and 'col'."
        )
    return ImageRecord(
        path=str(path),
        well=well_name(row, column),
        row=row,
        column=column,
        field=_int(groups.get("field")),
        channel=str(groups.get("channel", "")),
        z=_int(groups.get("z")),
        t=_int(groups.get("t")),
    )


_FOLDER_NUMBERS = {
    "t": re.compile(r"^TimePoint_(\d+)$", re.IGNORECASE),
    "z": re.compile(r"^ZStep_(\d+)$", re.IGNORECASE),
}


def _walk_files(root: Path) -> list[Path]:
    files = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            files.append(Path(folder) / name)
    return sorted(files)


def _match_vendor(
    vendor: str, regex: re.Pattern, files: list[Path], root: Path
) -> list[ImageRecord]:
    records = []
    for path in files:
        on_name = vendor in VENDOR_PATTERNS
        text = path.name if on_name else path.relative_to(root).as_posix()
        match = regex.match(text) if on_name else regex.search(text)
        if not match:
            continue
        extra: dict[str, Any] = {}
        if vendor == "imagexpress":
            for part in path.relative_to(root).parts[:-1]:
                for key, folder_re in _FOLDER_NUMBERS.items():
                    found = folder_re.match(part)
                    if found:
                        extra[key] = found.group(1)
            if match.group("channel"):
                extra["channel"] = f"w{match.group('channel')}"
        elif vendor == "cellomics":
            extra["channel"] = f"d{match.group('channel')}"
        elif vendor == "opera":
            extra["channel"] = f"ch{match.group('channel')}"
        records.append(_record_from_match(match, path, extra))
    return records


def _htd_texts(root: Path) -> list[str]:
    texts = []
    for htd in sorted({*root.rglob("*.HTD"), *root.rglob("*.htd")}):
        try:
            texts.append(htd.read_text(errors="replace"))
        except OSError as error:
            logger.warning("cannot read plate metadata %s: %s", htd, error)
    return texts


def _htd_geometry(root: Path) -> PlateGeometry | None:
    for text in _htd_texts(root):
        x = re.search(r'"XWells",\s*(\d+)', text)
        y = re.search(r'"YWells",\s*(\d+)', text)
        if x and y:
            rows, columns = int(y.group(1)), int(x.group(1))
            return PlateGeometry(rows * columns, rows, columns)
    return None


def _htd_channel_names(root: Path) -> dict[str, str]:
    """``{"w1": "DAPI", ...}`` from the ``"WaveName<N>"`` lines of an ImageXpress .HTD."""
    for text in _htd_texts(root):
        found = re.findall(r'"WaveName(\d+)",\s*"([^"]*)"', text)
        if found:
            return {f"w{number}": name.strip() for number, name in found if name.strip()}
    return {}


def _cellvoyager(mlf: Path) -> tuple[list[ImageRecord], PlateGeometry | None]:
    try:
        tree = ElementTree.parse(mlf)
    except (ElementTree.ParseError, OSError) as error:
        raise PlateNotFoundError(mlf, {"cellvoyager": f"cannot parse {mlf.name}: {error}"}) from error
    records = []
    for element in tree.getroot():
        attributes = {key.split("}")[-1]: value for key, value in element.attrib.items()}
        if attributes.get("Type") != "IMG" or not (element.text or "").strip():
            continue
        row, column = int(attributes["Row"]) - 1, int(attributes["Column"]) - 1
        records.append(
            ImageRecord(
                path=str(mlf.parent / element.text.strip()),
                well=well_name(row, column),
                row=row,
                column=column,
                field=_int(attributes.get("FieldIndex")),
                channel=f"C{_int(attributes.get('Ch')):02d}",
                z=_int(attributes.get("ZIndex")),
                t=_int(attributes.get("TimePoint")),
            )
        )
    geometry = None
    detail = mlf.parent / "MeasurementDetail.mrf"
    if detail.is_file():
        try:
            attributes = {
                key.split("}")[-1]: value
                for key, value in ElementTree.parse(detail).getroot().attrib.items()
            }
            rows, columns = int(attributes["RowCount"]), int(attributes["ColumnCount"])
            geometry = PlateGeometry(rows * columns, rows, columns)
        except (ElementTree.ParseError, OSError, KeyError, ValueError):
            geometry = None
    return records, geometry


def _open_image(path: str | Path, scene: int | None = None):
    try:
        from autotx_lib.imaging.readers import open_image
    except ImportError as error:  # the readers are a separate part of the package
        raise PlateNotFoundError(
            path, {"readers": f"autotx_lib.imaging.readers is not available ({error})"}
        ) from error
    return open_image(str(path), scene=scene)


def _from_reader(path: Path) -> tuple[list[ImageRecord], PlateGeometry | None, str]:
    image = _open_image(path)
    info = getattr(image, "plate", None)
    if info is None:
        raise PlateNotFoundError(
            path,
            {"readers": "the file opens, but holds no well-plate metadata (Image.plate is None)"},
        )
    records = []
    for well in info.wells:
        for number, scene in enumerate(well.fields):
            records.append(
                ImageRecord(
                    path=str(path),
                    well=well_name(well.row, well.column),
                    row=well.row,
                    column=well.column,
                    field=number,
                    scene=int(scene),
                    reader="open_image",
                )
            )
    geometry = None
    if info.rows and info.columns:
        geometry = PlateGeometry(info.rows * info.columns, info.rows, info.columns)
    return records, geometry, info.name or path.stem


def discover_plate(
    source: str | os.PathLike,
    *,
    pattern: str | None = None,
    geometry: int | PlateGeometry | None = None,
    name: str | None = None,
) -> Plate:
    """Find the plate in a folder (or plate file) and list its images.

    Parameters
    ----------
    source : path
        A folder exported by the instrument, a ``MeasurementData.mlf``, or a plate
        file the readers open (Zeiss well-plate CZI, Bio-Formats ``.fake`` plate, ...).
    pattern : str, optional
        A regular expression searched in each file's path relative to ``source``, with
        named groups ``well`` (or ``row`` and ``col``; a numeric row is 1-based),
        and optionally ``field``, ``channel``, ``z``, ``t``. Replaces vendor detection.
    geometry : int or PlateGeometry, optional
        The plate format (e.g. 384). Default: from the vendor's metadata when present
        (ImageXpress ``.HTD``, CellVoyager ``.mrf``, reader plate metadata), otherwise
        the smallest standard plate that holds every imaged well (then
        ``Plate.geometry_guessed`` is True).
    name : str, optional
        The plate's name; default the folder's (or file's) name.

    Returns
    -------
    plate : Plate

    Raises
    ------
    PlateNotFoundError
        Nothing recognisable; the message lists every layout tried and why it failed.
    FileNotFoundError
        ``source`` does not exist.

    Examples
    --------
    >>> plate = discover_plate("../shared/sampledata/hcs/ImageXpress_9987_Plate_3435")  # doctest: +SKIP
    >>> plate.vendor, plate.geometry.wells, plate.wells  # doctest: +SKIP
    ('imagexpress', 96, ['B02', 'B03'])
    """
    root = Path(source)
    if not root.exists():
        raise FileNotFoundError(f"plate source {root} does not exist; check the path.")
    tried: dict[str, str] = {}
    found: tuple[str, list[ImageRecord], PlateGeometry | None, str] | None = None

    if root.is_file():
        if root.name.lower().endswith(".mlf"):
            records, geo = _cellvoyager(root)
            found = ("cellvoyager", records, geo, root.parent.name)
        else:
            records, geo, plate_name = _from_reader(root)
            found = ("readers", records, geo, plate_name)
    else:
        files = _walk_files(root)
        if pattern is not None:
            try:
                regex = re.compile(pattern)
            except re.error as error:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {error}") from error
            if not ({"well"} <= set(regex.groupindex) or {"row", "col"} <= set(regex.groupindex)):
                raise ValueError(
                    f"pattern {pattern!r} needs a named group 'well', or both 'row' and 'col'."
                )
            records = _match_vendor("pattern", regex, files, root)
            if records:
                found = ("pattern", records, None, root.name)
            else:
                tried["pattern"] = f"{pattern!r} matched none of {len(files)} files"
        else:
            mlfs = [f for f in files if f.name.lower() == "measurementdata.mlf"]
            if mlfs:
                records, geo = _cellvoyager(mlfs[0])
                if records:
                    found = ("cellvoyager", records, geo, root.name)
                else:
                    tried["cellvoyager"] = f"{mlfs[0]} lists no images"
            else:
                tried["cellvoyager"] = "no MeasurementData.mlf"
            if found is None:
                best: tuple[str, list[ImageRecord]] | None = None
                for vendor, text in VENDOR_PATTERNS.items():
                    records = _match_vendor(vendor, re.compile(text, re.IGNORECASE), files, root)
                    example = {
                        "opera": "r01c01f01p01-ch1sk1fk1fl1.tiff",
                        "imagexpress": "<plate>_A01_s1_w1.tif",
                        "cellomics": "<plate>_D03f00d0.tif",
                    }[vendor]
                    if not records:
                        tried[vendor] = f"no file named like {example}"
                    elif best is None or len(records) > len(best[1]):
                        best = (vendor, records)
                if best is not None:
                    geo = _htd_geometry(root) if best[0] == "imagexpress" else None
                    found = (best[0], best[1], geo, root.name)
            if found is None:
                plate_files = [f for f in files if f.name.lower().endswith(_READER_SUFFIXES)]
                problems = []
                for candidate in plate_files:
                    try:
                        records, geo, plate_name = _from_reader(candidate)
                    except Exception as error:  # noqa: BLE001 - any reader failure: try the next
                        problems.append(f"{candidate.name}: {error}")
                        continue
                    found = ("readers", records, geo, plate_name)
                    break
                if found is None:
                    tried["readers"] = (
                        "; ".join(problems)
                        if problems
                        else f"no plate file ({', '.join(_READER_SUFFIXES)})"
                    )
    if found is None or not found[1]:
        if found is not None:
            tried[found[0]] = "recognised, but lists no images"
        raise PlateNotFoundError(root, tried)

    vendor, records, geo, default_name = found
    if isinstance(geometry, int):
        geo = PlateGeometry.from_wells(geometry)
    elif isinstance(geometry, PlateGeometry):
        geo = geometry
    max_row = max(r.row for r in records)
    max_column = max(r.column for r in records)
    guessed = geo is None or not geo.contains(max_row, max_column)
    if guessed:
        if geo is not None:
            logger.warning(
                "plate metadata says %d x %d wells but images reach %s; using a larger plate",
                geo.rows, geo.columns, well_name(max_row, max_column),
            )
        geo = PlateGeometry.fitting(max_row, max_column)
    names = _htd_channel_names(root) if vendor == "imagexpress" and root.is_dir() else {}
    records.sort(key=lambda r: (r.row, r.column, r.field, r.t, r.z, r.channel, r.path, r.scene or 0))
    return Plate(name or default_name, vendor, geo, records, str(root), guessed, names)


# --- reading and measuring ------------------------------------------------------------


def read_record_planes(record: ImageRecord) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Read every 2-D plane of one record.

    Returns a list of ``(coordinates, plane)``: ``coordinates`` overrides the record's
    ``channel``/``z``/``t`` (and sets ``plane``, the index inside the file) when the
    file holds several planes. A TIFF's leading axes are read from tifffile's series
    axes (``C`` -> channel, ``Z`` -> z, ``T`` -> t, anything else -> z).
    """
    if record.reader == "open_image":
        image = _open_image(record.path, scene=record.scene)
        dims = image.dims
        if hasattr(dims, "items"):  # readers' Dimensions: sizes by axis letter
            shape = dict(dims.items())
        else:  # a plain axis string such as "TCZYX"
            shape = dict(zip(str(dims), image.shape, strict=False))
        names = list(getattr(image, "channel_names", None) or [])
        planes = []
        for t in range(shape.get("T", 1)):
            for c in range(shape.get("C", 1)):
                for z in range(shape.get("Z", 1)):
                    plane = np.asarray(image.plane(t=t, c=c, z=z))
                    channel = names[c] if c < len(names) and names[c] else f"c{c}"
                    planes.append(({"channel": channel, "z": z, "t": t}, plane))
        return planes

    import tifffile

    with tifffile.TiffFile(record.path) as tif:
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
    if data.ndim == 2:
        return [({}, data)]
    if axes.endswith("S") and data.shape[-1] in (3, 4):  # RGB(A): measure luminance-free mean
        data = np.moveaxis(data, -1, 0)
        axes = "C" + axes[:-1]
    lead_axes = axes[: data.ndim - 2]
    planes = []
    for index in np.ndindex(*data.shape[:-2]):
        coordinates: dict[str, Any] = {"plane": int(np.ravel_multi_index(index, data.shape[:-2]))}
        for axis, value in zip(lead_axes, index, strict=True):
            if axis == "C":
                prefix = record.channel or "c"
                coordinates["channel"] = f"{prefix}c{value}" if record.channel else f"c{value}"
            elif axis == "T":
                coordinates["t"] = record.t + value
            else:
                coordinates["z"] = record.z + value
        planes.append((coordinates, data[index]))
    return planes


_BASE_COLUMNS = ("plate", "well", "row", "column", "field", "channel", "z", "t", "path")


def _measure_records(
    plate_name: str, records: Sequence[ImageRecord], metrics: tuple[str, ...], options: dict
) -> list[dict[str, Any]]:
    """Measure a batch of records; every failure becomes a row with its error."""
    from autotx_lib.imaging.qc import measure_image

    rows = []
    for record in records:
        base = {
            "plate": plate_name,
            "well": record.well,
            "row": record.row,
            "column": record.column,
            "field": record.field,
            "channel": record.channel,
            "z": record.z,
            "t": record.t,
            "path": record.path,
            "scene": -1 if record.scene is None else record.scene,
            "plane": 0,
            "error": "",
        }
        try:
            planes = read_record_planes(record)
        except Exception as error:  # noqa: BLE001 - a bad file is a failed row, never a crash
            rows.append(base | {"error": _describe(error, record.path)})
            continue
        for coordinates, plane in planes:
            row = base | coordinates
            try:
                row.update(measure_image(plane, metrics, **options))
            except Exception as error:  # noqa: BLE001
                row["error"] = _describe(error, record.path)
            rows.append(row)
    return rows


def _describe(error: BaseException, path: str) -> str:
    if isinstance(error, FileNotFoundError):
        return f"FileNotFoundError: {path} is missing (listed by the plate, not on disk)"
    return f"{type(error).__name__}: {error}"


class _Batch:
    """The records of one dask task, opaque to dask.

    dask looks for dask collections inside every list, tuple and dataclass given to a
    task; walking the fields of 1,536 records took 0.8 s of the client's time (one thread,
    before any task ran) on the 384-well benchmark plate. A plain object is not walked.
    """

    __slots__ = ("records",)

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self.records = tuple(records)

    def __len__(self) -> int:
        return len(self.records)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Batch, (self.records,))


def _measure_batch(
    plate_name: str, batch: _Batch, metrics: tuple[str, ...], options: dict
) -> list[dict[str, Any]]:
    """One dask task: :func:`_measure_records` of a batch."""
    return _measure_records(plate_name, batch.records, metrics, options)


def _batches(records: list[ImageRecord], size: int | None, threads: int) -> list[_Batch]:
    """Batches of ``size`` records; default about 8 per thread, at most 64 records."""
    size = size or max(1, min(64, math.ceil(len(records) / (threads * 8))))
    return [_Batch(records[i : i + size]) for i in range(0, len(records), size)]


#: Environment of the worker processes :func:`start_local_cluster` starts, set before
#: they start. dask's own default, ``MALLOC_TRIM_THRESHOLD_=65536``, also switches off
#: glibc's adaptive mmap threshold, so every temporary array above 128 kB (a 256 x 256
#: float64 plane is 512 kB) becomes a fresh ``mmap``, page-faulted in and unmapped again:
#: measured on the 384-well benchmark plate it halved a worker's images/s (2.5x the page
#: faults, most of the time in the kernel). Fixed thresholds keep image-sized buffers in
#: the heap for reuse (up to 128 MB of free heap kept per worker; frames above 64 MB are
#: still mapped and returned at once). The ``*_NUM_THREADS`` keep one thread per worker.
QC_WORKER_ENVIRONMENT: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(64 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def start_local_cluster(n_workers: int | None = None, **options: Any):
    """Start a ``distributed.LocalCluster`` suited to plate QC on this machine.

    One single-threaded worker process per core (each has its own GIL), started with
    :data:`QC_WORKER_ENVIRONMENT`. ``plate_qc(..., scheduler="local")`` uses it; start
    it yourself to reuse one cluster for several plates (pass a ``Client`` on it as
    ``scheduler``), and close it when done. The calling process's ``os.environ`` is
    left as it was (distributed would otherwise leave the workers' settings in it).

    Parameters
    ----------
    n_workers : int, optional
        Worker processes; default the number of CPUs.
    **options
        Further ``LocalCluster`` arguments; they override the defaults
        (``threads_per_worker=1, processes=True, dashboard_address=None``).

    Returns
    -------
    cluster : distributed.LocalCluster

    Notes
    -----
    For a facility cluster, give its workers the same environment through dask's
    ``distributed.nanny.pre-spawn-environ`` setting.

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> with start_local_cluster(2) as cluster, Client(cluster) as client:  # doctest: +SKIP
    ...     table = plate_qc("plate_folder", scheduler=client)
    """
    from autotx_lib._optional import require

    distributed = require("distributed", "to run plate QC on a local dask cluster")
    import dask

    environment = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environment.update(QC_WORKER_ENVIRONMENT)
    settings = {
        "n_workers": n_workers or os.cpu_count() or 1,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    } | options
    saved = {key: os.environ.get(key) for key in environment}
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environment}):
            return distributed.LocalCluster(**settings)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def plate_qc(
    source: str | os.PathLike | Plate,
    metrics: str | Iterable[str] | None = None,
    *,
    scheduler: Any = None,
    n_workers: int | None = None,
    pattern: str | None = None,
    geometry: int | PlateGeometry | None = None,
    thresholds: dict[str, float] | None = None,
    controls: str | Iterable[str] | None = None,
    scale: str | float = "dtype",
    window: int = 20,
    ceiling: float | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
):
    """Measure every image of a plate in parallel and give each image a verdict.

    Parameters
    ----------
    source : path or Plate
        A plate folder or plate file (see :func:`discover_plate`), or a discovered plate.
    metrics : str or iterable of str, optional
        Metric names of :mod:`autotx_lib.imaging.qc` (default ``"all"``).
    scheduler : optional
        Where to compute. ``None`` or ``"threads"``: dask's thread pool in this process
        (default). ``"processes"`` or ``"sync"``: dask's other local schedulers.
        ``"local"``: start a ``distributed.LocalCluster`` of ``n_workers`` one-thread
        worker processes (:func:`start_local_cluster`; closed afterwards). The fastest
        choice on a multi-core machine: no shared GIL, and workers tuned for image-sized
        arrays; start the cluster once yourself when measuring several plates. An address such as
        ``"tcp://host:8786"``: that dask scheduler (your facility's cluster; the
        workers must see the same paths). A ``distributed.Client`` or cluster object
        is used as given.
    n_workers : int, optional
        Threads or local workers; default the number of CPUs.
    pattern, geometry : optional
        Passed to :func:`discover_plate` when ``source`` is a path.
    thresholds : dict, optional
        Verdict thresholds (names as in
        :data:`~autotx_lib.imaging.qc_verdicts.DEFAULT_THRESHOLDS`), see
        :func:`~autotx_lib.imaging.qc_verdicts.decide_verdicts`.
    controls : str or iterable of str, optional
        Control wells, columns or rows for the intensity reference (``"1,12"``,
        ``["A01", "H"]``); default the whole plate.
    scale, window, ceiling : optional
        Passed to :func:`autotx_lib.imaging.qc.measure_image`.
    batch_size : int, optional
        Records per dask task; default about 8 tasks per worker thread (of the dask
        cluster's, for a distributed scheduler), at most 64 records.
        Each task reads its own files and sends back only metric rows, so the
        scheduler's per-task cost is paid once per batch and no pixels travel.
    progress : callable, optional
        Called as ``progress(done, total)`` (records) as batches finish.

    Returns
    -------
    table : pandas.DataFrame
        One row per image plane: ``plate, well, row, column, field, channel, z, t,
        path, scene, plane, error``, ``channel_name`` (from the metadata, else the
        code), one column per metric (NaN where the image failed), and the verdict
        columns of :func:`~autotx_lib.imaging.qc_verdicts.decide_verdicts`
        (``verdict``, ``flags``, ``flagged``, ``reason``, ``signal_fold``,
        ``focus_drop``). ``table.attrs`` holds the plate's name, vendor, geometry
        (``plate_format_guessed``), channel names, thresholds and references.
        Unreadable images are rows with ``error`` set; they never stop the plate.
    """
    import pandas as pd

    from autotx_lib._optional import require
    from autotx_lib.imaging.qc import _resolve_metrics

    plate = source if isinstance(source, Plate) else discover_plate(
        source, pattern=pattern, geometry=geometry
    )
    chosen = _resolve_metrics(metrics)
    options = {"scale": scale, "window": window, "ceiling": ceiling}
    workers = n_workers or os.cpu_count() or 1
    total = len(plate.records)
    batches = _batches(plate.records, batch_size, workers)
    done = 0
    results: list[list[dict[str, Any]]] = []

    def report(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    if scheduler is None or scheduler in ("threads", "processes", "sync", "single-threaded"):
        dask = require("dask", "to run plate QC in parallel")
        from dask.callbacks import Callback

        tasks = [
            dask.delayed(_measure_batch, pure=False)(plate.name, batch, chosen, options)
            for batch in batches
        ]
        keys = {task.key: len(batch) for task, batch in zip(tasks, batches, strict=True)}

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    report(keys[key])

        with _Progress():
            results = list(
                dask.compute(
                    *tasks,
                    scheduler=scheduler or "threads",
                    num_workers=None if scheduler in ("sync", "single-threaded") else workers,
                )
            )
    else:
        distributed = require("distributed", "to run plate QC on a dask cluster")
        owned = []
        if isinstance(scheduler, distributed.Client):
            client = scheduler
        elif scheduler == "local":
            cluster = start_local_cluster(workers)
            client = distributed.Client(cluster)
            owned = [client, cluster]
        elif isinstance(scheduler, str):
            client = distributed.Client(scheduler, timeout="20s")
            owned = [client]
        else:  # a cluster object
            client = distributed.Client(scheduler)
            owned = [client]
        try:
            if batch_size is None and n_workers is None:  # the cluster's threads, not ours
                batches = _batches(plate.records, None,
                                   sum(client.nthreads().values()) or workers)
            futures = client.map(
                _measure_batch, [plate.name] * len(batches), batches,
                [chosen] * len(batches), [options] * len(batches), pure=False,
            )
            sizes = {future.key: len(batch) for future, batch in zip(futures, batches, strict=True)}
            by_key = {}
            # with_results: finished batches' rows come back in one gather per wake-up,
            # not one round trip per batch; client.loop: the client need not be the default
            for future, rows in distributed.as_completed(futures, loop=client.loop,
                                                         with_results=True):
                by_key[future.key] = rows
                report(sizes[future.key])
            results = [by_key[future.key] for future in futures]
        finally:
            for thing in owned:
                thing.close()

    rows = [row for batch in results for row in batch]
    columns = list(_BASE_COLUMNS) + ["scene", "plane", "error"] + list(chosen)
    table = pd.DataFrame(rows, columns=columns)
    for name in chosen:
        table[name] = table[name].astype(np.float64)
    table = table.sort_values(
        ["row", "column", "field", "t", "z", "channel", "path", "scene", "plane"], kind="stable"
    ).reset_index(drop=True)
    table.insert(table.columns.get_loc("channel") + 1, "channel_name",
                 [plate.channel_label(str(c)) for c in table["channel"]])
    table.attrs.update(
        {
            "plate": plate.name,
            "vendor": plate.vendor,
            "plate_rows": plate.geometry.rows,
            "plate_columns": plate.geometry.columns,
            "plate_wells": plate.geometry.wells,
            "plate_format_guessed": plate.geometry_guessed,
            "channel_names": dict(plate.channel_names),
            "intensity_scale": str(scale),
        }
    )
    return decide_verdicts(table, thresholds=thresholds, controls=controls)


# --- summaries and pictures ---------------------------------------------------------------


def well_summary(table, metrics: Iterable[str] | None = None, *, agg: str = "median"):
    """One row per well and channel: the ``agg`` of each metric over fields, z and t.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`plate_qc`.
    metrics : iterable of str, optional
        Default: every metric column of the table.
    agg : str, optional
        Any pandas aggregation name ("median", "mean", "min", "max").

    Returns
    -------
    summary : pandas.DataFrame
        Columns ``plate, well, row, column, channel, channel_name, n_images, n_flagged,
        n_failed, verdict`` (the most important of the images' verdicts), ``flags``
        (every verdict of its images), ``reason`` and one per metric.
    """
    from autotx_lib.imaging.qc import ALL_METRICS

    names = [m for m in (metrics or ALL_METRICS) if m in table.columns]
    keys = [k for k in ("plate", "well", "row", "column", "channel", "channel_name")
            if k in table.columns]
    grouped = table.groupby(keys, sort=True, dropna=False)
    summary = grouped[names].agg(agg) if names else grouped.size().to_frame("_").iloc[:, :0]
    summary.insert(0, "n_images", grouped.size())
    flagged = table.get("flagged", table.index.to_series() < 0)
    summary.insert(1, "n_flagged", flagged.groupby([table[k] for k in keys]).sum().astype(int))
    errors = table.get("error", table.index.to_series().map(lambda _: ""))
    failed = errors.fillna("").astype(str) != ""
    summary.insert(2, "n_failed", failed.groupby([table[k] for k in keys]).sum().astype(int))
    if "verdict" in table.columns:
        from autotx_lib.imaging.qc_verdicts import well_verdicts

        verdicts = well_verdicts(table, by=keys).set_index(keys)
        summary.insert(3, "verdict", verdicts["verdict"])
        summary.insert(4, "flags", verdicts["flags"])
        summary.insert(5, "reason", verdicts["reason"])
    elif "flags" in table.columns:
        union = table.groupby(keys, sort=True, dropna=False)["flags"].agg(
            lambda column: ",".join(sorted({f for text in column for f in text.split(",") if f}))
        )
        summary.insert(3, "flags", union)
    summary = summary.reset_index()
    summary.attrs.update(table.attrs)
    return summary


def plate_heatmap(
    table,
    metric: str,
    *,
    channel: str | None = None,
    plate: str | None = None,
    agg: str = "median",
    geometry: int | PlateGeometry | None = None,
    palette: str = "Viridis256",
    title: str | None = None,
    width: int | None = None,
):
    """A bokeh heatmap of one metric, wells laid out as on the plate.

    Each well shows the ``agg`` of the metric over its fields (and z, t) for one
    channel; wells without images are grey. Hovering shows the well, the value, the
    number of images and the flags.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`plate_qc` (or :func:`well_summary`).
    metric : str
        A metric column.
    channel : str, optional
        Required when the table has more than one channel.
    plate : str, optional
        Required when the table has more than one plate.
    agg : str, optional
        Aggregation over a well's images.
    geometry : int or PlateGeometry, optional
        Default: ``table.attrs`` from :func:`plate_qc`, else the smallest plate that fits.
    palette : str, optional
        A bokeh palette name.
    title : str, optional
    width : int, optional
        Figure width in pixels; default grows with the number of columns.

    Returns
    -------
    figure : bokeh.plotting.figure
    """
    from autotx_lib._optional import require

    require("bokeh", "to draw plate heatmaps")
    from bokeh import palettes
    from bokeh.models import ColorBar, ColumnDataSource, HoverTool
    from bokeh.plotting import figure
    from bokeh.transform import linear_cmap

    if metric not in table.columns:
        raise ValueError(f"the table has no column {metric!r}; metric columns are measured names.")
    data = table
    for column, wanted in (("plate", plate), ("channel", channel)):
        if column in data.columns:
            present = list(dict.fromkeys(data[column]))
            if wanted is None and len(present) > 1:
                raise ValueError(
                    f"the table has several {column}s {present}; pass {column}= to choose one."
                )
            if wanted is not None:
                if wanted not in present:
                    raise ValueError(f"{column} {wanted!r} is not in the table; it has {present}.")
                data = data[data[column] == wanted]
    if "n_images" not in data.columns:
        data = well_summary(data, [metric], agg=agg)
    if isinstance(geometry, int):
        geo = PlateGeometry.from_wells(geometry)
    elif isinstance(geometry, PlateGeometry):
        geo = geometry
    elif "plate_rows" in table.attrs:
        geo = PlateGeometry(
            table.attrs["plate_wells"], table.attrs["plate_rows"], table.attrs["plate_columns"]
        )
    else:
        geo = PlateGeometry.fitting(int(data["row"].max()), int(data["column"].max()))
    by_well = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(data["row"], data["column"], strict=True))}
    rows, columns, names, values, counts, flags = [], [], [], [], [], []
    for r in range(geo.rows):
        for c in range(geo.columns):
            rows.append(row_label(r))
            columns.append(str(c + 1))
            names.append(well_name(r, c))
            i = by_well.get((r, c))
            if i is None:
                values.append(np.nan)
                counts.append(0)
                flags.append("not imaged")
            else:
                values.append(float(data[metric].iloc[i]))
                counts.append(int(data["n_images"].iloc[i]))
                flags.append(str(data["flags"].iloc[i]) if "flags" in data.columns else "")
    source = ColumnDataSource(
        {"row": rows, "col": columns, "well": names, "value": values, "n": counts, "flags": flags}
    )
    finite = [v for v in values if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    mapper = linear_cmap("value", getattr(palettes, palette), low, high, nan_color="#dddddd")
    label = title or f"{metric}" + (f" ({channel})" if channel else "")
    cell = 30 if geo.columns <= 24 else 16
    fig = figure(
        title=label,
        x_range=[str(c + 1) for c in range(geo.columns)],
        y_range=[row_label(r) for r in reversed(range(geo.rows))],
        x_axis_location="above",
        width=width or max(320, cell * geo.columns + 140),
        height=max(180, cell * geo.rows + 80),
        tools="hover,save",
        toolbar_location="below",
    )
    fig.rect("col", "row", width=0.92, height=0.92, source=source, fill_color=mapper, line_color="white")
    fig.grid.visible = False
    fig.axis.axis_line_color = None
    fig.axis.major_tick_line_color = None
    hover = fig.select_one(HoverTool)
    hover.tooltips = [
        ("well", "@well"),
        (metric, "@value{0.[0000]}"),
        ("images", "@n"),
        ("flags", "@flags"),
    ]
    fig.add_layout(ColorBar(color_mapper=mapper["transform"], width=10), "right")
    return fig
