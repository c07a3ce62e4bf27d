"""Native Zeiss CZI backend (czifile). Each CZI scene (``S``) is a scene of its own.

Each scene is assembled from its full-resolution subblocks inside the scene's own bounding
box (czifile alone would place all scenes in one joint box, 90000 pixels wide for two wells
of a plate). Tiles of a mosaic scene are pasted in file order (see :meth:`CziReader.tile_coverage`). Scene names come from the
CZI metadata; scenes named after wells (``"D6"``) give a plate layout, sized by the
metadata's plate template when it has one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.base import BackendRefusal, Image
from autotx_lib.imaging.readers.plate import plate_from_scene_names
from autotx_lib.imaging.readers.types import Objective, PhysicalPixelSizes, PlateInfo

_IGNORED = set("BHMVIRA")  # size-1 bookkeeping axes (mosaic tiles are pasted, not an axis)


class CziReader(Image):
    """Read Zeiss ``.czi`` files with czifile."""

    name = "czifile"
    extensions = ("czi",)

    def _open(self) -> None:
        czifile = require("czifile", "to read Zeiss CZI files natively")
        try:
            self._czi = czifile.CziFile(str(self.path))
            entries = list(self._czi.filtered_subblock_directory)
            self._xml = _parse_xml(self._czi.metadata())
        except Exception as error:
            raise ReaderError(self.path, {self.name: f"{type(error).__name__}: {error}"}) from error
        if not entries:
            raise ReaderError(self.path, {self.name: "no image subblocks"})
        axes = self._czi.axes
        shape = dict(zip(axes, self._czi.shape, strict=True))
        odd = {a: n for a, n in shape.items() if a not in "STCZYX0" and a not in _IGNORED and n > 1}
        if odd or shape.get("0", 1) > 1:
            self._czi.close()
            raise BackendRefusal(self.path, {self.name: f"axes {shape} (RGB or unusual) not read "
                                                        "natively"})
        self._dtype = np.dtype(self._czi.dtype)
        scenes: dict[int, list[Any]] = {}
        for entry in entries:
            start = dict(zip(entry.axes, entry.start, strict=True))
            if entry.shape != entry.stored_shape:  # a pyramid level: not full resolution
                continue
            scenes.setdefault(int(start.get("S", 0)), []).append(entry)
        self._scene_ids = sorted(scenes)
        self._layouts = []
        for sid in self._scene_ids:
            blocks = scenes[sid]
            starts = [dict(zip(e.axes, e.start, strict=True)) for e in blocks]
            sizes = [dict(zip(e.axes, e.shape, strict=True)) for e in blocks]
            y0 = min(s["Y"] for s in starts)
            x0 = min(s["X"] for s in starts)
            y1 = max(s["Y"] + n["Y"] for s, n in zip(starts, sizes, strict=True))
            x1 = max(s["X"] + n["X"] for s, n in zip(starts, sizes, strict=True))
            planes: dict[tuple[int, int, int], list[tuple[Any, int, int]]] = {}
            for entry, s in zip(blocks, starts, strict=True):
                key = (int(s.get("T", 0)), int(s.get("C", 0)), int(s.get("Z", 0)))
                planes.setdefault(key, []).append((entry, s["Y"] - y0, s["X"] - x0))
            tcz = np.array(list(planes))
            lo = tcz.min(axis=0)
            counts = tcz.max(axis=0) - lo + 1
            self._layouts.append({
                "planes": planes, "offset": tuple(int(v) for v in lo),
                "sizes": {"T": int(counts[0]), "C": int(counts[1]), "Z": int(counts[2]),
                          "Y": int(y1 - y0), "X": int(x1 - x0)},
            })

    def _find(self, path: str) -> list[Any]:
        return self._xml.findall(path)

    def _scene_list(self) -> list[tuple[str, str]]:
        names = {}
        for scene in self._find(".//Information/Image/Dimensions/S/Scenes/Scene"):
            names[int(scene.get("Index", len(names)))] = scene.get("Name", "")
        return [(f"Image:{i}", names.get(sid, "")) for i, sid in enumerate(self._scene_ids)]

    def _scene_sizes(self, scene: int) -> dict[str, int]:
        return dict(self._layouts[scene]["sizes"])

    def _scene_dtype(self, scene: int) -> np.dtype:
        return self._dtype

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        layout = self._layouts[scene]
        sizes = layout["sizes"]
        t0, c0, z0 = layout["offset"]
        out = np.zeros((sizes["Y"], sizes["X"]), dtype=self._dtype)
        for entry, y, x in layout["planes"].get((t + t0, c + c0, z + z0), []):
            tile = _tile_data(entry)
            tile = tile.reshape(tile.shape[entry.axes.index("Y")], tile.shape[entry.axes.index("X")])
            out[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        return out

    def tile_coverage(self, scene: int | None = None) -> np.ndarray:
        """How many tiles cover each pixel of a scene's first plane (2+ = tile overlap).

        In overlaps the pixel comes from the last tile in file order; Bio-Formats stitches
        in another order, so the two backends agree everywhere except there.
        """
        layout = self._layouts[self.current_scene_index if scene is None else scene]
        sizes = layout["sizes"]
        count = np.zeros((sizes["Y"], sizes["X"]), dtype=np.int32)
        for entry, y, x in next(iter(layout["planes"].values())):
            h, w = entry.shape[entry.axes.index("Y")], entry.shape[entry.axes.index("X")]
            count[y:y + h, x:x + w] += 1
        return count

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        found = {}
        for distance in self._find(".//Scaling/Items/Distance"):
            value = distance.findtext("Value")
            if value:
                found[distance.get("Id")] = float(value) * 1e6  # metres -> micrometres
        z = found.get("Z") if self._layouts[scene]["sizes"]["Z"] > 1 else None
        return PhysicalPixelSizes(z, found.get("Y"), found.get("X"))

    def _channel_names(self, scene: int) -> list[str] | None:
        names = [ch.get("Name") or ch.get("Id") or "" for ch in
                 self._find(".//Information/Image/Dimensions/Channels/Channel")]
        return names if len(names) == self._layouts[scene]["sizes"]["C"] else None

    def _channel_wavelengths(self, scene: int) -> list[tuple[float | None, float | None]] | None:
        channels = self._find(".//Information/Image/Dimensions/Channels/Channel")
        if len(channels) != self._layouts[scene]["sizes"]["C"]:
            return None
        return [(_float(ch.findtext("ExcitationWavelength")),
                 _float(ch.findtext("EmissionWavelength"))) for ch in channels]

    def _acquisition_time(self, scene: int) -> datetime | None:
        text = self._xml.findtext(".//Information/Image/AcquisitionDateAndTime")
        if not text:
            return None
        try:  # ZEN writes 7 decimals ("...02.4915604Z"); Python parses up to 6
            return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text.strip()))
        except ValueError as error:
            self.report_metadata_problem("acquisition time", error)
            return None

    def _objective(self, scene: int) -> Objective | None:
        objectives = self._find(".//Information/Instrument/Objectives/Objective")
        ref = self._xml.find(".//Information/Image/ObjectiveSettings/ObjectiveRef")
        chosen = next((o for o in objectives if ref is not None and o.get("Id") == ref.get("Id")),
                      objectives[0] if len(objectives) == 1 else None)
        if chosen is None:
            return None
        return Objective(
            name=chosen.findtext("Manufacturer/Model") or chosen.get("Name"),
            magnification=_float(chosen.findtext("NominalMagnification")),
            numerical_aperture=_float(chosen.findtext("LensNA")),
            immersion=chosen.findtext("Immersion"),
        )

    def _raw_metadata(self) -> Any:
        return self._xml

    def _plate(self) -> PlateInfo | None:
        rows = self._xml.findtext(".//ShapeRows")
        columns = self._xml.findtext(".//ShapeColumns")
        rows_i = int(rows) if rows and rows.isdigit() and int(rows) > 0 else None
        cols_i = int(columns) if columns and columns.isdigit() and int(columns) > 0 else None
        if rows_i is None or cols_i is None:  # no plate template: scenes are not wells
            return None
        name = self._xml.findtext(".//Information/Document/Name") or self.path.stem
        return plate_from_scene_names(
            name, [s.name for s in self.scenes], rows=rows_i, columns=cols_i
        )

    def _close(self) -> None:
        self._czi.close()


def _parse_xml(text: str) -> Any:
    """The CZI metadata as an element tree: lxml when installed (5x faster on the 0.5 MB of
    a typical ZEN file), else the standard library's. Both answer find/findall/get alike."""
    try:
        from lxml import etree
    except ImportError:
        return ET.fromstring(text)
    return etree.fromstring(text.encode("utf-8"), etree.XMLParser(huge_tree=True))


def _float(text: str | None) -> float | None:
    """A number from CZI XML text, None when absent or empty."""
    return float(text) if text and text.strip() else None


def _tile_data(entry: Any) -> np.ndarray:
    """Pixels of one subblock; adds the Zstd codecs (5, 6) that czifile 2019 lacks."""
    segment = entry.data_segment()
    if entry.compression not in (5, 6):
        return segment.data()
    imagecodecs = require("imagecodecs", "to decode Zstd-compressed CZI subblocks")
    raw = segment.data(raw=True)
    hilo = False
    if entry.compression == 6:  # "zstd1": a small header, then the zstd stream
        header = raw[0]
        hilo = header >= 3 and raw[1] == 1 and bool(raw[2] & 1)
        raw = raw[header:]
    data = np.frombuffer(imagecodecs.zstd_decode(raw), dtype=np.uint8)
    if hilo:  # 16-bit pixels stored as all low bytes, then all high bytes
        half = data.size // 2
        packed = np.empty_like(data)
        packed[0::2], packed[1::2] = data[:half], data[half:]
        data = packed
    return data.view(np.dtype(entry.dtype)).reshape(entry.stored_shape)
