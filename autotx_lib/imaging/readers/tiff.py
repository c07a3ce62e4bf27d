"""Native TIFF / OME-TIFF backend (tifffile): the fast path for TIFF files.

Axis interpretation
-------------------
OME-TIFF and ImageJ hyperstacks carry their axes; they are used as written. A plain
multi-page TIFF has no axis metadata (tifffile calls the page axis ``I``): it is read as a
**Z** stack, the common case at a facility (Bio-Formats alone reads it as T). A
Micro-Manager multi-position OME-TIFF set (tifffile axis ``R``) gives one scene per position.
RGB samples become channels. Files with other axes (e.g. a lambda axis) are left to
Bio-Formats: this backend refuses them, and the registry tries the next one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.base import BackendRefusal, Image
from autotx_lib.imaging.readers.ome_xml import _TO_MICROMETRE
from autotx_lib.imaging.readers.plate import plate_from_ome
from autotx_lib.imaging.readers.types import Objective, PhysicalPixelSizes, PlateInfo

_AS_Z = ("Z", "I", "Q")  # tifffile's generic sequence axes read as a z-stack


@dataclass
class _Layout:
    """How one scene maps onto a tifffile series."""

    series: int
    position: int  # index along R, or 0
    leading_axes: str  # series axes before the page axes (R included)
    leading_shape: tuple[int, ...]
    page_axes: str  # e.g. "YX", "YXS", "SYX"
    sizes: dict[str, int]


class TiffReader(Image):
    """Read TIFF, OME-TIFF, ImageJ and Micro-Manager TIFFs with tifffile."""

    name = "tifffile"
    extensions = ("ome.tif", "ome.tiff", "ome.btf", "tif", "tiff", "btf", "tf2", "tf8", "stk", "lsm")

    def _open(self) -> None:
        tifffile = require("tifffile", "to read TIFF files natively")
        try:
            self._tif = tifffile.TiffFile(self.path)
            series_list = list(self._tif.series)
        except Exception as error:
            raise ReaderError(self.path, {self.name: f"{type(error).__name__}: {error}"}) from error
        self._layouts: list[_Layout] = []
        self._companions: list[Any] = []
        try:
            for index, series in enumerate(series_list):
                self._layouts.extend(self._layouts_of(index, series))
            self._check_complete()
        except Exception:
            self._tif.close()
            raise

    def _refuse(self, why: str) -> ReaderError:
        return BackendRefusal(self.path, {self.name: why})

    def _layouts_of(self, index: int, series: Any) -> list[_Layout]:
        axes, shape = series.axes, tuple(series.shape)
        page_axes = series.keyframe.axes
        if not axes.endswith(page_axes):
            raise self._refuse(f"series {index} axes {axes} do not end with page axes {page_axes}")
        leading = axes[: len(axes) - len(page_axes)]
        leading_shape = shape[: len(leading)]
        page_shape = dict(zip(page_axes, shape[len(leading):], strict=True))
        sizes = {"T": 1, "C": 1, "Z": 1, "Y": page_shape["Y"], "X": page_shape["X"]}
        for axis, size in zip(leading, leading_shape, strict=True):
            target = "Z" if axis in _AS_Z else axis
            if target in "TCZ":
                if sizes[target] > 1:
                    raise self._refuse(f"series {index}: two axes map to {target} ({axes})")
                sizes[target] = size
            elif axis != "R" and size > 1:
                raise self._refuse(f"series {index}: axis {axis!r} of size {size} ({axes}) is "
                                   "not read natively")
        if "S" in page_shape and page_shape["S"] > 1:
            if sizes["C"] > 1:
                raise self._refuse(f"series {index}: both C and RGB samples ({axes})")
            sizes["C"] = page_shape["S"]
        if len(series.pages) != int(np.prod(leading_shape, dtype=np.int64)):
            raise self._refuse(
                f"series {index}: {len(series.pages)} pages for {int(np.prod(leading_shape))} planes"
            )
        positions = leading_shape[leading.index("R")] if "R" in leading else 1
        return [
            _Layout(index, r, leading, leading_shape, page_axes, dict(sizes)) for r in range(positions)
        ]

    def _check_complete(self) -> None:
        """Refuse truncated files: every plane's bytes must lie inside its file, and the
        chain of pages must not point past the end (a cut stack would look shorter)."""
        import struct

        tif = self._tif
        handle = tif.filehandle
        last = tif.pages[len(tif.pages) - 1]
        fmt = tif.tiff
        handle.seek(last.offset)
        (count,) = struct.unpack(fmt.tagnoformat, handle.read(fmt.tagnosize))
        handle.seek(last.offset + fmt.tagnosize + count * fmt.tagsize)
        raw = handle.read(fmt.offsetsize)
        following = struct.unpack(fmt.offsetformat, raw)[0] if len(raw) == fmt.offsetsize else -1
        if following != 0 and (following < 0 or following >= handle.size):
            raise ReaderError(self.path, {self.name: (
                f"truncated: page {len(tif.pages) - 1} links to a next page at byte {following}, "
                f"the file has {handle.size}")})
        for layout in self._layouts:
            series = self._tif.series[layout.series]
            for number, page in enumerate(series.pages):
                if page is None:
                    raise ReaderError(self.path, {self.name: f"plane {number} of series "
                                      f"{layout.series} is missing (a file of the set is absent?)"})
                handle = page.parent.filehandle
                if handle.closed:  # a companion file of a multi-file set: keep it open
                    handle.open()
                    self._companions.append(handle)
                size = handle.size
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)]
                if ends and max(ends) > size:
                    raise ReaderError(self.path, {self.name: (
                        f"truncated: plane {number} needs bytes up to {max(ends)}, the file "
                        f"has {size}")})

    def _metaseries(self) -> dict[str, Any]:
        """The MetaSeries (MetaMorph, MetaXpress, ImageXpress) PlaneInfo, or {}."""
        if not self._tif.is_metaseries:
            return {}
        try:
            return dict(self._tif.metaseries_metadata.get("PlaneInfo") or {})
        except Exception as error:  # malformed XML in the description
            self.report_metadata_problem("MetaSeries metadata", error)
            return {}

    def _scene_list(self) -> list[tuple[str, str]]:
        if self._tif.is_metaseries and len(self._layouts) == 1:
            return [("Image:0", str(self._metaseries().get("image-name", "")))]
        images = [(im.id, im.name) for im in self._ome_summary().images]
        if images and len(images) == len(self._layouts):
            return images
        names = []
        for i, layout in enumerate(self._layouts):
            name = self._tif.series[layout.series].name or ""
            names.append((f"Image:{i}", name))
        return names

    def _scene_sizes(self, scene: int) -> dict[str, int]:
        return dict(self._layouts[scene].sizes)

    def _scene_dtype(self, scene: int) -> np.dtype:
        return self._tif.series[self._layouts[scene].series].dtype

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        layout = self._layouts[scene]
        index = []
        sample = None
        for axis in layout.leading_axes:
            target = "Z" if axis in _AS_Z else axis
            index.append({"T": t, "C": c, "Z": z, "R": layout.position}.get(target, 0))
        if "S" in layout.page_axes and layout.sizes["C"] > 1 and "C" not in layout.leading_axes:
            sample = c
        number = int(np.ravel_multi_index(index, layout.leading_shape)) if index else 0
        page = self._tif.series[layout.series].pages[number]
        data = page.asarray()
        data = data.reshape([s for s in data.shape if s > 1] or [1, 1]) if data.ndim > 2 else data
        if data.ndim == 3:
            axes = [a for a in layout.page_axes if a in "SYX"]
            s_axis = axes.index("S")
            data = np.take(data, sample or 0, axis=s_axis)
        return data.reshape(layout.sizes["Y"], layout.sizes["X"])

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        if self._tif.is_ome:
            return super()._physical_pixel_sizes(scene)
        if self._tif.is_metaseries:
            info = self._metaseries()
            factor = _TO_MICROMETRE.get(str(info.get("spatial-calibration-units", "")))
            if not info.get("spatial-calibration-state") or factor is None:
                return PhysicalPixelSizes(None, None, None)
            x, y = info.get("spatial-calibration-x"), info.get("spatial-calibration-y")
            return PhysicalPixelSizes(None, float(y) * factor if y else None,
                                      float(x) * factor if x else None)
        # Resolution tags alone are no calibration (72 dpi from a paint program, say): only
        # ImageJ's micron unit makes them one. Bio-Formats converts any dpi to micrometres.
        meta = self._tif.imagej_metadata or {}
        unit = str(meta.get("unit", "")).replace("\\u00B5", "µ")
        if unit not in ("micron", "µm", "um", "microns"):
            return PhysicalPixelSizes(None, None, None)
        page = self._tif.series[self._layouts[scene].series].keyframe

        def from_tag(tag: str) -> float | None:
            value = page.tags.get(tag)
            if value is None:
                return None
            num, den = value.value
            return den / num if num else None

        spacing = meta.get("spacing")
        return PhysicalPixelSizes(
            float(spacing) if spacing else None, from_tag("YResolution"), from_tag("XResolution")
        )

    def _channel_names(self, scene: int) -> list[str] | None:
        if self._tif.is_metaseries:  # the illumination setting, as Bio-Formats names it
            name = self._metaseries().get("_IllumSetting_")
            return [str(name)] if name and self._dims(scene).C == 1 else None
        return super()._channel_names(scene)

    def _channel_wavelengths(self, scene: int) -> list[tuple[float | None, float | None]] | None:
        if self._tif.is_metaseries:
            wave = self._metaseries().get("wavelength")
            return [(None, float(wave) if wave else None)] if self._dims(scene).C == 1 else None
        return super()._channel_wavelengths(scene)

    def _acquisition_time(self, scene: int) -> datetime | None:
        if self._tif.is_metaseries:
            when = self._metaseries().get("acquisition-time-local")
            return when if isinstance(when, datetime) else None
        return super()._acquisition_time(scene)

    def _objective(self, scene: int) -> Objective | None:
        if self._tif.is_metaseries:
            info = self._metaseries()
            name = info.get("_MagSetting_")
            if not name:
                return None
            magnification = re.match(r"\s*(\d+(?:\.\d+)?)\s*[xX]", str(name))
            return Objective(
                name=str(name),
                magnification=float(magnification.group(1)) if magnification else None,
                numerical_aperture=float(info["_MagNA_"]) if info.get("_MagNA_") else None,
            )
        return super()._objective(scene)

    def _ome_xml(self) -> str | None:
        return self._tif.ome_metadata if self._tif.is_ome else None

    def _raw_metadata(self) -> Any:
        tif = self._tif
        return {
            "imagej": tif.imagej_metadata,
            "micromanager": tif.micromanager_metadata if tif.is_micromanager else None,
            "metaseries": tif.metaseries_metadata if tif.is_metaseries else None,
            "description": tif.pages[0].description,
        }

    def _plate(self) -> PlateInfo | None:
        if not self._ome_summary().has_plate:
            return None
        ome = self.ome_metadata
        return plate_from_ome(ome, [s.id for s in self.scenes]) if ome is not None else None

    def _close(self) -> None:
        for handle in self._companions:
            handle.close()
        self._tif.close()
