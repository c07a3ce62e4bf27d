"""Native Nikon ND2 backend (the ``nd2`` package). Positions (``P``) are scenes."""

from __future__ import annotations

from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.base import BackendRefusal, Image
from autotx_lib.imaging.readers.types import PhysicalPixelSizes


class ND2Reader(Image):
    """Read Nikon NIS-Elements ``.nd2`` files with the nd2 package."""

    name = "nd2"
    extensions = ("nd2",)

    def _open(self) -> None:
        nd2 = require("nd2", "to read Nikon ND2 files natively")
        try:
            self._file = nd2.ND2File(self.path)
            sizes = dict(self._file.sizes)
        except Exception as error:
            raise ReaderError(self.path, {self.name: f"{type(error).__name__}: {error}"}) from error
        unknown = [k for k, v in sizes.items() if k not in "TPZCYXS" and v > 1]
        if unknown or (sizes.get("S", 1) > 1 and sizes.get("C", 1) > 1):
            self._file.close()
            raise BackendRefusal(self.path, {self.name: f"axes {sizes} are not read natively"})
        self._sizes = sizes
        self._loop_axes = [k for k in sizes if k not in "CYXS"]
        self._loop_shape = tuple(sizes[k] for k in self._loop_axes)

    def _scene_list(self) -> list[tuple[str, str]]:
        count = self._sizes.get("P", 1)
        names = [""] * count
        try:
            for loop in self._file.experiment:
                if loop.type == "XYPosLoop":
                    names = [p.name or "" for p in loop.parameters.points][:count]
                    names += [""] * (count - len(names))
        except Exception as error:  # position names are a nicety: the scenes stay readable
            self.report_metadata_problem("position names", error)
        return [(f"Image:{i}", name) for i, name in enumerate(names)]

    def _scene_sizes(self, scene: int) -> dict[str, int]:
        s = self._sizes
        channels = s.get("C", 1) if s.get("S", 1) == 1 else s["S"]
        return {"T": s.get("T", 1), "C": channels, "Z": s.get("Z", 1), "Y": s["Y"], "X": s["X"]}

    def _scene_dtype(self, scene: int) -> np.dtype:
        return np.dtype(self._file.dtype)

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        coords = {"T": t, "P": scene, "Z": z}
        index = [coords.get(axis, 0) for axis in self._loop_axes]
        number = int(np.ravel_multi_index(index, self._loop_shape)) if index else 0
        frame = np.asarray(self._file.read_frame(number))
        if frame.ndim == 2:
            return frame
        if self._sizes.get("S", 1) > 1:
            return frame.reshape(self._sizes["Y"], self._sizes["X"], -1)[..., c]
        return frame.reshape(-1, self._sizes["Y"], self._sizes["X"])[c]

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        voxel = self._file.voxel_size()
        z = float(voxel.z) if self._sizes.get("Z", 1) > 1 else None
        return PhysicalPixelSizes(z, float(voxel.y), float(voxel.x))

    def _channel_names(self, scene: int) -> list[str] | None:
        try:
            return [ch.channel.name for ch in self._file.metadata.channels]
        except Exception as error:
            self.report_metadata_problem("channel names", error)
            return None

    def _ome_xml(self) -> str | None:
        try:
            return self._file.ome_metadata().to_xml()
        except Exception as error:
            self.report_metadata_problem("OME metadata (made by the nd2 package)", error)
            return None

    def _raw_metadata(self) -> Any:
        return self._file.metadata

    def _close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()
