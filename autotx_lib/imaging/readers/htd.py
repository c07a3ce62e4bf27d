"""Native ImageXpress (MetaXpress) plate backend: an ``.HTD`` plate descriptor and its TIFFs.

A MetaXpress export is a folder ``<plate>/TimePoint_<t>/[ZStep_<z>/]<name>_<well>_s<site>_w<wave>.TIF``
with the descriptor ``<name>.HTD`` at the top, in ``TimePoint_1`` or in each ``ZStep``
folder (all copies are the same). Each (well, site) is a scene, in row-major well order and
site order; its planes are the files found for it: ``T`` the time points, ``C`` the
wavelengths and ``Z`` the z steps present, named from the ``.HTD`` (``WaveName1``...).

Partial exports are the rule, not the exception: the ``.HTD`` describes the acquisition
(say 6 time points, 4 wavelengths), the export holds what was chosen (1 time point, 2
wavelengths). Dimensions follow the files, :attr:`HtdReader.missing_from_export` says what
the ``.HTD`` declares that is not there, and a plane the grid expects but whose file is
absent raises a :class:`~autotx_lib.errors.ReaderError` naming it (Bio-Formats 7.3 reads such
plates with planes from the wrong files, zeros, or not at all).

Pixel sizes, emission wavelength, objective and acquisition time come from each TIFF's
MetaSeries metadata (see :mod:`.tiff`); the z spacing from the ``z-position`` of the first
two z steps. Use :func:`read_htd` and :func:`find_htd_files` to list a plate without opening
it (e.g. for plate discovery).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.base import Image
from autotx_lib.imaging.readers.plate import row_index
from autotx_lib.imaging.readers.types import (
    Objective,
    PhysicalPixelSizes,
    PlateInfo,
    WellInfo,
    well_name,
)

_LINE = re.compile(r'^\s*"(?P<key>[^"]+)"\s*(?:,\s*(?P<values>.*))?$')
_IMAGE = re.compile(
    r"^(?P<name>.+?)_(?P<well>[A-Za-z]{1,2}\d{1,2})(?:_s(?P<site>\d+))?(?:_w(?P<wave>\d+))?"
    r"(?P<thumb>_thumb)?(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f-]{27})?\.tiff?$",
    re.IGNORECASE,
)
_TIMEPOINT = re.compile(r"^TimePoint_(\d+)$", re.IGNORECASE)
_ZSTEP = re.compile(r"^ZStep_(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class HtdDescriptor:
    """What an ImageXpress ``.HTD`` file declares about a plate acquisition.

    Attributes
    ----------
    path : Path
        The ``.HTD`` file.
    name : str
        Its stem: the prefix of the plate's image file names.
    description : str
        Free text the user typed (may hold line breaks).
    rows, columns : int
        Plate geometry (``YWells``, ``XWells``).
    wells : list of str
        Wells selected for acquisition (``"B02"``...), row-major.
    sites : int
        Sites selected per well (``SiteSelection`` cells set to TRUE), at least 1.
    wavelengths : dict of int to str
        Wavelength number (the ``_w<n>`` of file names) to its name (``WaveName<n>``).
    timepoints, z_steps : int
        Declared numbers of time points and z steps (``ZSteps`` is 0 when no z-series).
    """

    path: Path
    name: str
    description: str
    rows: int
    columns: int
    wells: list[str]
    sites: int
    wavelengths: dict[int, str]
    timepoints: int
    z_steps: int


@dataclass(frozen=True)
class HtdFile:
    """One image file of an ImageXpress plate, with its place in the plate.

    ``timepoint``, ``z_step``, ``site`` and ``wavelength`` keep the vendor's numbering
    (``TimePoint_1`` is 1; a file without ``_s``/``_w`` is site/wavelength 1; a file outside
    ``ZStep`` folders has ``z_step`` None).
    """

    path: Path
    well: str
    site: int
    wavelength: int
    timepoint: int
    z_step: int | None = None


def read_htd(path: str | Path) -> HtdDescriptor:
    """Parse an ImageXpress ``.HTD`` plate descriptor.

    Raises
    ------
    autotx_lib.errors.ReaderError
        If the file is not an HTD (its first line is not ``"HTSInfoFile"``) or lacks the
        plate size.

    Examples
    --------
    >>> htd = read_htd("plate/9987.HTD")  # doctest: +SKIP
    >>> htd.wavelengths, htd.wells  # doctest: +SKIP
    ({1: 'DAPI', 2: 'FITC', 3: 'Texas Red', 4: 'Cy5'}, ['B02', 'B03'])
    """
    path = Path(path)
    text = path.read_text(encoding="latin-1")
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            values = match.group("values") or ""
            entries[match.group("key")] = [v.strip().strip('"') for v in values.split(",")]
    if "HTSInfoFile" not in entries:
        raise ReaderError(path, {"imagexpress": 'no "HTSInfoFile" line: not an ImageXpress .HTD'})

    def number(key: str, default: int = 0) -> int:
        values = entries.get(key) or [str(default)]
        try:
            return int(values[0])
        except ValueError:
            return default

    rows, columns = number("YWells"), number("XWells")
    if rows < 1 or columns < 1:
        raise ReaderError(path, {"imagexpress": "the .HTD gives no plate size (XWells, YWells)"},
                          "copy the .HTD again from the instrument")
    wells = [
        well_name(r, c) for r in range(rows)
        for c, chosen in enumerate(entries.get(f"WellsSelection{r + 1}", []))
        if chosen.upper() == "TRUE"
    ]
    site_cells = [v for key, values in entries.items() if key.startswith("SiteSelection")
                  for v in values]
    sites = sum(v.upper() == "TRUE" for v in site_cells) or 1
    count = number("NWavelengths", 1) if entries.get("Waves", ["FALSE"])[0].upper() == "TRUE" else 1
    wavelengths = {w: (entries.get(f"WaveName{w}") or [f"w{w}"])[0] or f"w{w}"
                   for w in range(1, count + 1)}
    z_series = (entries.get("ZSeries") or ["FALSE"])[0].upper() == "TRUE"
    return HtdDescriptor(
        path=path, name=path.stem,
        description=", ".join(entries.get("Description", [])).replace("\r", "").strip(),
        rows=rows, columns=columns, wells=wells, sites=sites, wavelengths=wavelengths,
        timepoints=max(number("TimePoints", 1), 1), z_steps=number("ZSteps") if z_series else 0,
    )


def plate_folder(htd_path: str | Path) -> Path:
    """The top folder of the export an ``.HTD`` belongs to (above ``TimePoint_N/ZStep_N``)."""
    folder = Path(htd_path).resolve().parent
    if _ZSTEP.match(folder.name):
        folder = folder.parent
    if _TIMEPOINT.match(folder.name):
        folder = folder.parent
    return folder


def find_htd_files(htd_path: str | Path) -> list[HtdFile]:
    """Every image file of the plate an ``.HTD`` describes (thumbnails left out), sorted.

    Files are matched by the ``.HTD``'s name (``9987.HTD`` -> ``9987_B02_s1_w1.TIF``) in the
    export's folder and its ``TimePoint_N`` and ``TimePoint_N/ZStep_N`` folders.

    Examples
    --------
    >>> [f.path.name for f in find_htd_files("plate/9987.HTD")][:2]  # doctest: +SKIP
    ['9987_B02_s1_w1.TIF', '9987_B02_s1_w2.TIF']
    """
    htd_path = Path(htd_path)
    root = plate_folder(htd_path)
    prefix = htd_path.stem.lower()
    found = []
    folders = [(root, None, None)]
    for time_folder in sorted(p for p in root.iterdir() if p.is_dir() and _TIMEPOINT.match(p.name)):
        timepoint = int(_TIMEPOINT.match(time_folder.name).group(1))
        folders.append((time_folder, timepoint, None))
        folders += [(z, timepoint, int(_ZSTEP.match(z.name).group(1)))
                    for z in time_folder.iterdir() if z.is_dir() and _ZSTEP.match(z.name)]
    for folder, timepoint, z_step in folders:
        for path in folder.iterdir():
            match = _IMAGE.match(path.name)
            if not match or match.group("thumb") or match.group("name").lower() != prefix:
                continue
            found.append(_htd_file(path, match, timepoint, z_step))
    return sorted(found, key=lambda f: (*_well_key(f.well), f.site, f.timepoint,
                                        f.z_step or 0, f.wavelength))


def _htd_file(path: Path, match: re.Match, timepoint: int | None, z_step: int | None) -> HtdFile:
    """An HtdFile from a file name's match and the folders it sits in."""
    letters, digits = re.match(r"([A-Za-z]+)(\d+)", match.group("well")).groups()
    return HtdFile(
        path=path, well=f"{letters.upper()}{int(digits):02d}",
        site=int(match.group("site") or 1), wavelength=int(match.group("wave") or 1),
        timepoint=timepoint or 1, z_step=z_step,
    )


def _well_key(well: str) -> tuple[int, int]:
    """(row, column), 0-based, of a well name like ``"B02"``."""
    return row_index(well[:-2]), int(well[-2:]) - 1


@dataclass
class _Grid:
    """Which file holds each plane: scenes x (t, c, z) -> path."""

    scenes: list[tuple[str, int]] = field(default_factory=list)  # (well, site)
    timepoints: list[int] = field(default_factory=list)
    wavelengths: list[int] = field(default_factory=list)
    z_steps: list[int | None] = field(default_factory=list)
    files: dict[tuple[str, int, int, int, int | None], Path] = field(default_factory=dict)


class HtdReader(Image):
    """Read an ImageXpress plate from its ``.HTD`` and TIFF files, without Java.

    Attributes
    ----------
    descriptor : HtdDescriptor
        What the ``.HTD`` declares.
    files : list of HtdFile
        The image files found.
    """

    name = "imagexpress"
    extensions = ("htd",)

    def _open(self) -> None:
        self._tifffile = require("tifffile", "to read ImageXpress TIFFs natively")
        self.descriptor = read_htd(self.path)
        self.files = find_htd_files(self.path)
        if not self.files:
            raise ReaderError(self.path, {self.name: (
                f"no image files named {self.descriptor.name}_<well>_s<site>_w<wave>.TIF "
                f"under {plate_folder(self.path)}")})
        in_steps = any(f.z_step is not None for f in self.files)
        # with z-steps, files beside the ZStep folders are projections (MIPs): not planes
        planes = [f for f in self.files if (f.z_step is not None) == in_steps]
        grid = _Grid()
        grid.scenes = sorted({(f.well, f.site) for f in planes},
                             key=lambda ws: (*_well_key(ws[0]), ws[1]))
        grid.timepoints = sorted({f.timepoint for f in planes})
        grid.wavelengths = sorted({f.wavelength for f in planes})
        grid.z_steps = sorted({f.z_step for f in planes}, key=lambda z: z or 0)
        grid.files = {(f.well, f.site, f.timepoint, f.wavelength, f.z_step): f.path for f in planes}
        self._grid = grid
        self._projections = len(self.files) - len(planes)
        self._meta_cache: dict[Path, dict[str, Any]] = {}
        first = planes[0].path
        with self._tifffile.TiffFile(first) as tif:
            page = tif.pages[0]
            if page.samplesperpixel != 1 or len(page.shape) != 2:
                raise ReaderError(self.path, {self.name: f"{first.name} is not a grey plane"})
            self._shape, self._dtype = tuple(page.shape), np.dtype(page.dtype)

    # --- what is missing -----------------------------------------------------------------

    @property
    def missing_from_export(self) -> list[str]:
        """list of str : What the ``.HTD`` declares that the exported files do not hold."""
        htd, grid, out = self.descriptor, self._grid, []
        if len(grid.timepoints) < htd.timepoints:
            out.append(f"{len(grid.timepoints)} of {htd.timepoints} time points")
        absent = [f"w{w} {n}" for w, n in htd.wavelengths.items() if w not in grid.wavelengths]
        if absent:
            out.append("wavelength(s) " + ", ".join(absent))
        wells = {w for w, _ in grid.scenes}
        absent_wells = [w for w in htd.wells if w not in wells]
        if absent_wells:
            out.append("well(s) " + ", ".join(absent_wells))
        holes = self.missing_planes
        if holes:
            out.append(f"{len(holes)} plane(s) inside the exported grid, e.g. {holes[0]}")
        return out

    @property
    def missing_planes(self) -> list[str]:
        """list of str : Planes of the exported grid whose file is absent (scene t c z)."""
        grid, out = self._grid, []
        for index, (well, site) in enumerate(grid.scenes):
            for t in grid.timepoints:
                for w in grid.wavelengths:
                    for z in grid.z_steps:
                        if (well, site, t, w, z) not in grid.files:
                            out.append(self._file_label(index, t, w, z))
        return out

    def _file_label(self, scene: int, t: int, w: int, z: int | None) -> str:
        well, site = self._grid.scenes[scene]
        where = f"TimePoint_{t}" + (f"/ZStep_{z}" if z is not None else "")
        return f"{where}/{self.descriptor.name}_{well}_s{site}_w{w}.TIF"

    # --- hooks ---------------------------------------------------------------------------

    def _scene_list(self) -> list[tuple[str, str]]:
        return [(f"Image:{i}", f"{well} site {site}")
                for i, (well, site) in enumerate(self._grid.scenes)]

    def _scene_sizes(self, scene: int) -> dict[str, int]:
        grid = self._grid
        return {"T": len(grid.timepoints), "C": len(grid.wavelengths), "Z": len(grid.z_steps),
                "Y": self._shape[0], "X": self._shape[1]}

    def _scene_dtype(self, scene: int) -> np.dtype:
        return self._dtype

    def _file(self, scene: int, t: int, c: int, z: int) -> Path:
        grid = self._grid
        well, site = grid.scenes[scene]
        key = (well, site, grid.timepoints[t], grid.wavelengths[c], grid.z_steps[z])
        path = grid.files.get(key)
        if path is None:
            label = self._file_label(scene, *key[2:])
            raise ReaderError(self.path, {self.name: f"plane t={t} c={c} z={z} of {well} site "
                                                     f"{site}: {label} is not in the export"},
                              "export it again from MetaXpress with every wavelength and time "
                              "point, or read only the planes that exist (see missing_planes)")
        return path

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        return self._tifffile.imread(self._file(scene, t, c, z))

    def _plane_info(self, path: Path) -> dict[str, Any]:
        """The MetaSeries PlaneInfo of one file (cached)."""
        if path not in self._meta_cache:
            info: dict[str, Any] = {}
            try:
                with self._tifffile.TiffFile(path) as tif:
                    if tif.is_metaseries:
                        info = dict(tif.metaseries_metadata.get("PlaneInfo") or {})
            except Exception as error:
                self.report_metadata_problem(f"MetaSeries metadata of {path.name}", error)
            self._meta_cache[path] = info
        return self._meta_cache[path]

    def _first_info(self, scene: int, c: int = 0) -> dict[str, Any]:
        try:
            return self._plane_info(self._file(scene, 0, c, 0))
        except ReaderError:
            return {}

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        info = self._first_info(scene)
        if not info.get("spatial-calibration-state") or info.get("spatial-calibration-units") != "um":
            return PhysicalPixelSizes(None, None, None)
        z = None
        if len(self._grid.z_steps) > 1:
            try:
                z0 = self._plane_info(self._file(scene, 0, 0, 0)).get("z-position")
                z1 = self._plane_info(self._file(scene, 0, 0, 1)).get("z-position")
                z = round(abs(float(z1) - float(z0)), 6) if z0 is not None and z1 is not None else None
            except ReaderError:
                z = None
        y, x = info.get("spatial-calibration-y"), info.get("spatial-calibration-x")
        return PhysicalPixelSizes(z or None, float(y) if y else None, float(x) if x else None)

    def _channel_names(self, scene: int) -> list[str] | None:
        names = self.descriptor.wavelengths
        return [names.get(w, f"w{w}") for w in self._grid.wavelengths]

    def _channel_wavelengths(self, scene: int) -> list[tuple[float | None, float | None]] | None:
        out = []
        for c in range(len(self._grid.wavelengths)):
            wave = self._first_info(scene, c).get("wavelength")
            out.append((None, float(wave) if wave else None))
        return out

    def _acquisition_time(self, scene: int) -> datetime | None:
        when = self._first_info(scene).get("acquisition-time-local")
        return when if isinstance(when, datetime) else None

    def _objective(self, scene: int) -> Objective | None:
        info = self._first_info(scene)
        name = info.get("_MagSetting_")
        if not name:
            return None
        magnification = re.match(r"\s*(\d+(?:\.\d+)?)\s*[xX]", str(name))
        return Objective(
            name=str(name), magnification=float(magnification.group(1)) if magnification else None,
            numerical_aperture=float(info["_MagNA_"]) if info.get("_MagNA_") else None,
        )

    def _raw_metadata(self) -> Any:
        return self.descriptor

    def _plate(self) -> PlateInfo | None:
        wells: dict[str, list[int]] = {}
        for index, (well, _) in enumerate(self._grid.scenes):
            wells.setdefault(well, []).append(index)
        infos = [WellInfo(w, *_well_key(w), fields) for w, fields in wells.items()]
        return PlateInfo(name=self.descriptor.name, rows=self.descriptor.rows,
                         columns=self.descriptor.columns, wells=infos)
