"""Native Leica LIF backend (readlif). Each LIF image is a scene.

Axis interpretation
-------------------
- A lambda (spectral) sweep, emission or excitation, is read as **C**: one channel per
  wavelength step (``C = channels x steps``, channel-major), named ``lambda:0``... Bio-Formats
  7.3 reads the same sweep as T; pixels agree plane for plane.
- The plane is the LIF's two display dimensions: for an XZ scan the plane's rows are Z
  (Bio-Formats does the same), and the remaining scanned axis (Y of an XZY scan) is Z.
- Tile scans (mosaics) are left to Bio-Formats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.base import BackendRefusal, Image
from autotx_lib.imaging.readers.types import PhysicalPixelSizes

_SPATIAL = (1, 2, 3)  # x, y, z dimension ids in LIF
_TIME = 4
_LAMBDA = (5, 9)  # emission, excitation wavelength sweeps


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
        return {
            "x": plane_x, "y": plane_y, "z": stack[0] if stack else None,
            "lambda": lambdas[0] if lambdas else None, "steps": steps,
            "sizes": {"T": dims.get(_TIME, 1), "C": image.channels * steps,
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

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        layout = self._layouts[scene]
        scale = dict(getattr(self._images[scene], "scale_n", {}) or {})

        def size(dim: int | None) -> float | None:
            value = scale.get(dim) if dim is not None else None
            return 1.0 / float(value) if value else None

        return PhysicalPixelSizes(size(layout["z"]), size(layout["y"]), size(layout["x"]))

    def _channel_names(self, scene: int) -> list[str] | None:
        layout = self._layouts[scene]
        steps, channels = layout["steps"], self._images[scene].channels
        if steps == 1:
            return None
        if channels == 1:
            return [f"lambda:{i}" for i in range(steps)]
        return [f"C:{ch} lambda:{i}" for ch in range(channels) for i in range(steps)]

    def _raw_metadata(self) -> Any:
        return self._lif.xml_header

    def _close(self) -> None:
        self._images = []
