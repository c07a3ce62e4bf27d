"""ArrayReader: an in-memory backend over numpy arrays, for tests, demos and plugin authors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autotx_lib.imaging.readers.base import Image
from autotx_lib.imaging.readers.types import PhysicalPixelSizes


class ArrayReader(Image):
    """An :class:`Image` over one or more in-memory ``TCZYX`` arrays (one per scene).

    Parameters
    ----------
    arrays : (T, C, Z, Y, X) ndarray or sequence of them
        Pixel data; fewer than 5 dimensions are read as the trailing axes
        (a 2-D array is ``YX``, 3-D is ``ZYX``).
    scene_names : sequence of str, optional
        One name per scene.
    channel_names : sequence of str, optional
        Channel names, shared by every scene.
    physical_pixel_sizes : PhysicalPixelSizes or tuple, optional
        ``(Z, Y, X)`` in micrometres.
    path : str, optional
        A label used in messages (default ``"<array>"``).

    Examples
    --------
    >>> img = ArrayReader(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> str(img.dims), img.plane(z=1)[0, 0]
    ('T=1 C=1 Z=2 Y=3 X=4', np.uint8(12))
    """

    name = "array"
    extensions = ()

    def __init__(
        self,
        arrays: np.ndarray | Sequence[np.ndarray],
        *,
        scene_names: Sequence[str] | None = None,
        channel_names: Sequence[str] | None = None,
        physical_pixel_sizes: PhysicalPixelSizes | tuple | None = None,
        path: str = "<array>",
    ) -> None:
        if isinstance(arrays, np.ndarray):
            arrays = [arrays]
        self._arrays: list[np.ndarray] = []
        for i, array in enumerate(arrays):
            array = np.asarray(array)
            if not 2 <= array.ndim <= 5:
                raise ValueError(
                    f"scene {i}: an array of {array.ndim} dimensions cannot be read as TCZYX; "
                    "give 2 (YX) to 5 (TCZYX) dimensions"
                )
            self._arrays.append(array.reshape((1,) * (5 - array.ndim) + array.shape))
        if scene_names is not None and len(scene_names) != len(self._arrays):
            raise ValueError(
                f"{len(scene_names)} scene names for {len(self._arrays)} arrays; give one per array"
            )
        self._names = list(scene_names) if scene_names is not None else [""] * len(self._arrays)
        self._channels = list(channel_names) if channel_names is not None else None
        self._sizes = PhysicalPixelSizes(*(physical_pixel_sizes or (None, None, None)))
        super().__init__(Path(path))

    def _scene_list(self) -> list[tuple[str, str]]:
        return [(f"Image:{i}", name) for i, name in enumerate(self._names)]

    def _scene_sizes(self, scene: int) -> dict[str, int]:
        return dict(zip("TCZYX", self._arrays[scene].shape, strict=True))

    def _scene_dtype(self, scene: int) -> np.dtype:
        return self._arrays[scene].dtype

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        return self._arrays[scene][t, c, z]

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        return self._sizes

    def _channel_names(self, scene: int) -> list[str] | None:
        return self._channels

    def _raw_metadata(self) -> Any:
        return {"scenes": len(self._arrays)}
