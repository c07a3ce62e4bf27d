"""Native Leica LIF backend (readlif). Each LIF image is a scene.

Axis interpretation
-------------------
- A lambda (spectral) sweep, emission or excitation, is read as **C**: one channel per
  wavelength step (``C = channels x steps``, channel-major), named ``lambda:0``... Bio-Formats
  7.3 reads the same sweep as T; pixels agree plane for plane.
- The plane is the LIF's two display dimensions: for an XZ scan the plane's rows are Z
  (Bio-Formats does the same), and the remaining scanned axis (Y of an XZY scan) is the
  array's Z. :attr:`Image.scan_axes` says so (``"YZX"``) and :attr:`physical_pixel_sizes`
  are physical: an XZ plane's row spacing is its ``Z`` (Bio-Formats calls it Y), the Y steps
  of an XZY scan are its ``Y`` (Bio-Formats calls them Z).
- An XT line scan (rows are successive times) is one plane per channel, ``scan_axes`` ``"ZTX"``,
  rows :attr:`time_increment` seconds apart (no sample file here: untested on real data).
- Channel names are the active detectors' dye names (``"Leica/FITC"``), as Bio-Formats
  names them. A lambda sweep's channels (``lambda:0``...) carry their wavelength: emission
  (the detection band's start) or excitation, in :attr:`Image.channels`.
- Tile scans (mosaics) are left to Bio-Formats.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.base import BackendRefusal, Image
from autotx_lib.imaging.readers.types import Objective, PhysicalPixelSizes

_SPATIAL = (1, 2, 3)  # x, y, z dimension ids in LIF
_TIME = 4
_LAMBDA = (5, 9)  # emission, excitation wavelength sweeps
_LETTER = {1: "X", 2: "Y", 3: "Z", 4: "T"}


class LifReader(Image):
    """Read Leica ``.lif`` files with readlif."""

    name = "readlif"
    extensions = ("lif",)

    def _open(self) -> None:
        readlif = require("readlif.reader", "to read Leica LIF files natively")
        try:
            self._lif = readlif.LifFile(str(self.path))
            self._images = list(self._lif.get_iter_image())
        except Exception as error:
            raise ReaderError(self.path, {self.name: f"{type(error).__name__}: {error}"}) from error
        self._layouts = [self._layout(i, im) for i, im in enumerate(self._images)]
        self._elements = [e for e in self._lif.xml_root.iter("Element")
                          if e.find("./Data/Image") is not None]
        if [e.get("Name") for e in self._elements] != [im.name for im in self._images]:
            self.report_metadata_problem(
                "image settings (channel names, objective, times)",
                "the XML's image elements do not match readlif's image list")
            self._elements = [None] * len(self._images)

    def _layout(self, index: int, image: Any) -> dict[str, Any]:
        dims = dict(image.dims_n)
        plane_x, plane_y = image.display_dims
        stack = [d for d in _SPATIAL if d not in (plane_x, plane_y) and dims.get(d, 1) > 1]
        lambdas = [d for d in _LAMBDA if dims.get(d, 1) > 1]
        known = {plane_x, plane_y, _TIME, *_SPATIAL, *_LAMBDA}
        other = {d: n for d, n in dims.items() if d not in known and n > 1}
        if other or len(stack) > 1 or len(lambdas) > 1:
            raise BackendRefusal(self.path, {self.name: f"image {index} has dimensions {dims} "
                                                     "(mosaic or unusual), not read natively"})
        if image.bit_depth[0] > 16:
            raise BackendRefusal(self.path, {self.name: f"bit depth {image.bit_depth} not read natively"})
        steps = dims[lambdas[0]] if lambdas else 1
        line_scan = plane_y == _TIME  # XT: a plane's rows are successive times
        return {
            "x": plane_x, "y": plane_y, "z": stack[0] if stack else None,
            "lambda": lambdas[0] if lambdas else None, "steps": steps,
            "sizes": {"T": 1 if line_scan else dims.get(_TIME, 1), "C": image.channels * steps,
                      "Z": dims[stack[0]] if stack else 1,
                      "Y": dims.get(plane_y, 1), "X": dims.get(plane_x, 1)},
        }

    def _scene_list(self) -> list[tuple[str, str]]:
        return [(f"Image:{i}", im.name) for i, im in enumerate(self._images)]

    def _scene_sizes(self, scene: int) -> dict[str, int]:
        return dict(self._layouts[scene]["sizes"])

    def _scene_dtype(self, scene: int) -> np.dtype:
        return np.dtype(np.uint8 if self._images[scene].bit_depth[0] <= 8 else np.uint16)

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        layout = self._layouts[scene]
        steps = layout["steps"]
        requested = {}
        if layout["sizes"]["T"] > 1:
            requested[_TIME] = t
        if layout["z"] is not None:
            requested[layout["z"]] = z
        if layout["lambda"] is not None:
            requested[layout["lambda"]] = c % steps
        plane = self._images[scene].get_plane(
            display_dims=(layout["x"], layout["y"]), c=c // steps, requested_dims=requested
        )
        return np.asarray(plane, dtype=self._scene_dtype(scene))

    def _scan_axes(self, scene: int) -> str:
        layout = self._layouts[scene]
        rows, columns = _LETTER.get(layout["y"], "Y"), _LETTER.get(layout["x"], "X")
        if layout["z"] is not None:
            stack = _LETTER[layout["z"]]
        else:  # no stack: name the spatial axis the plane leaves out
            stack = next(a for a in "ZYX" if a not in (rows, columns))
        return stack + rows + columns

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        """Spacing along physical Z, Y, X (an XZ plane's rows are Z apart, not Y)."""
        layout = self._layouts[scene]
        scale = dict(getattr(self._images[scene], "scale_n", {}) or {})
        used = {layout["x"], layout["y"], layout["z"]}

        def size(dim: int) -> float | None:
            value = scale.get(dim) if dim in used else None
            return 1.0 / float(value) if value else None

        return PhysicalPixelSizes(size(3), size(2), size(1))

    def _time_increment(self, scene: int) -> float | None:
        """Seconds between time points, or between the rows of an XT line scan."""
        value = dict(getattr(self._images[scene], "scale_n", {}) or {}).get(_TIME)
        return 1.0 / float(value) if value else None

    def _settings(self, scene: int) -> Any:
        """The image's ATLConfocalSettingDefinition element (or None)."""
        element = self._elements[scene]
        if element is None:
            return None
        return element.find("./Data/Image/Attachment/ATLConfocalSettingDefinition")

    def _dye_names(self, scene: int) -> list[str] | None:
        """Active detectors' dye names, as Bio-Formats names LIF channels ("Leica/FITC")."""
        settings = self._settings(scene)
        if settings is None:
            return None
        bands = {b.get("Channel"): b.get("DyeName", "") for b in settings.iter("MultiBand")}
        names = [bands.get(d.get("Channel"), "") for d in settings.iter("Detector")
                 if d.get("IsActive") == "1"]
        return names if names and all(names) else None

    def _acquisition_time(self, scene: int) -> datetime | None:
        element = self._elements[scene]
        stamps = element.find("./Data/Image/TimeStampList") if element is not None else None
        if stamps is None or not (stamps.text or "").split():
            return None
        try:  # Windows FILETIME: 100 ns ticks since 1601-01-01 UTC, in hexadecimal
            ticks = int(stamps.text.split()[0], 16)
        except ValueError as error:
            self.report_metadata_problem("acquisition time", error)
            return None
        return datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=ticks // 10)

    def _objective(self, scene: int) -> Objective | None:
        settings = self._settings(scene)
        if settings is None or not settings.get("ObjectiveName"):
            return None

        def number(key: str) -> float | None:
            text = settings.get(key)
            return float(text) if text else None

        return Objective(
            name=settings.get("ObjectiveName").strip(),
            magnification=number("Magnification"),
            numerical_aperture=number("NumericalAperture"),
            immersion=settings.get("Immersion") or None,
        )

    def _channel_names(self, scene: int) -> list[str] | None:
        layout = self._layouts[scene]
        steps, channels = layout["steps"], self._images[scene].channels
        if steps == 1:
            names = self._dye_names(scene)
            return names if names and len(names) == channels else None
        if channels == 1:
            return [f"lambda:{i}" for i in range(steps)]
        return [f"C:{ch} lambda:{i}" for ch in range(channels) for i in range(steps)]

    def _channel_wavelengths(self, scene: int) -> list[tuple[float | None, float | None]] | None:
        """A lambda sweep's wavelength at each step (emission or excitation), from the LIF's
        dimension description; Bio-Formats 7.3 reports none."""
        layout, element = self._layouts[scene], self._elements[scene]
        if layout["lambda"] is None or element is None:
            return None
        description = next((d for d in element.iter("DimensionDescription")
                            if d.get("DimID") == str(layout["lambda"])), None)
        steps = layout["steps"]
        try:
            origin = float(description.get("Origin")) * 1e9  # metres -> nanometres
            step = float(description.get("Length")) * 1e9 / max(steps - 1, 1)
        except (AttributeError, TypeError, ValueError) as error:
            self.report_metadata_problem("lambda sweep wavelengths", error)
            return None
        waves = [round(origin + i * step, 3) for i in range(steps)]
        pairs = [(None, w) if layout["lambda"] == 5 else (w, None) for w in waves]
        return pairs * self._images[scene].channels

    def _raw_metadata(self) -> Any:
        return self._lif.xml_header

    def _close(self) -> None:
        self._images = []
