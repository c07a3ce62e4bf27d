"""The checks every backend must pass; backends' tests (plugins' too) call :func:`check_image`."""

from __future__ import annotations

import numpy as np

from autotx_lib.imaging.readers.base import Image
from autotx_lib.imaging.readers.types import Dimensions, PhysicalPixelSizes


def check_image(image: Image, *, max_planes: int = 6) -> None:
    """Assert that ``image`` behaves as the :class:`Image` contract says, on every scene.

    Checks dims/shape/dtype consistency, that ``plane()``, ``data`` and ``dask_data`` agree
    (on up to ``max_planes`` planes per scene), index validation, scene selection by index,
    id and name, pixel sizes and channel names.

    Raises
    ------
    AssertionError
        With a message naming the backend, scene and check that failed.
    """
    assert image.scenes, f"{image.name}: no scenes"
    ids = [s.id for s in image.scenes]
    assert len(set(ids)) == len(ids), f"{image.name}: duplicate scene ids {ids}"
    for scene in image.scenes:
        where = f"{image.name} {image.path.name} scene {scene.index}"
        assert image.set_scene(scene.index) is image
        assert image.current_scene == scene
        assert image.set_scene(scene.id).current_scene_index == scene.index, where
        dims = image.dims
        assert isinstance(dims, Dimensions) and dims.order == "TCZYX", where
        assert image.shape == dims.shape and all(n >= 1 for n in dims.shape), where
        assert isinstance(image.dtype, np.dtype), where
        sizes = image.physical_pixel_sizes
        assert isinstance(sizes, PhysicalPixelSizes), where
        assert all(v is None or v > 0 for v in sizes), f"{where}: pixel sizes {sizes}"
        assert len(image.channel_names) == dims.C, where
        assert [ch.name for ch in image.channels] == image.channel_names, where
        assert len(image.scan_axes) == 3 and set(image.scan_axes) <= set("TZYX"), where
        when = image.acquisition_time
        assert when is None or hasattr(when, "isoformat"), f"{where}: acquisition time {when!r}"
        planes = [(t, c, z) for t in range(dims.T) for c in range(dims.C) for z in range(dims.Z)]
        step = max(1, len(planes) // max_planes)
        lazy = image.dask_data
        assert lazy.shape == dims.shape and lazy.dtype == image.dtype, where
        assert lazy.chunksize == (1, 1, 1, dims.Y, dims.X), where
        for t, c, z in planes[::step][:max_planes]:
            plane = image.plane(t=t, c=c, z=z)
            assert plane.shape == (dims.Y, dims.X) and plane.dtype == image.dtype, where
            np.testing.assert_array_equal(np.asarray(lazy[t, c, z]), plane, err_msg=where)
        for axis in "tcz":
            size = dims[axis.upper()]
            try:
                image.plane(**{axis: size})
            except IndexError:
                pass
            else:
                raise AssertionError(f"{where}: {axis}={size} did not raise IndexError")
    image.set_scene(0)
