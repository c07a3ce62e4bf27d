"""Stack viewer benchmark: moving the z slider against the bare numpy slab maximum.

On a 64 x 1024 x 1024 uint16 stack with a slab of 17 planes (half-width 8: the slab is
symmetric around z, so the nearest size to 16 that it can take, one plane more), each z
step is timed from setting the slider's new value to the new image data having been
pushed through jupyter_bokeh (the PATCH-DOC message serialised and its image buffer handed
to the widget's comm; outside a kernel that comm discards it), and compared with ``stack[z-8:z+9].max(axis=0)`` alone, measured interleaved in
the same run. The target is a ratio <= 2.

Prints ``name: value`` lines:

- ``viewer_value_to_pushed_ms`` / ``numpy_slab_max_ms``: medians over a sweep of the
  slider up and down, and ``viewer_over_numpy``, their ratio;
- ``viewer_whole_step_ms``: the whole step, including the slider and info-line updates
  that follow the push;
- ``pushes``: image updates sent to the browser side (one per step, checked);
- ``lazy_image_value_to_pushed_ms`` and ``lazy_image_over_numpy``: the same sweep over the stack
  written as a TIFF and opened lazily with ``open_image`` (planes read from the file as
  the slab moves, one new plane per step; the page cache is warm).

Run: ``.venv/bin/python benchmarks/viewer.py``
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from autotx_lib.imaging.viewer import view_stack

SHAPE = (64, 1024, 1024)
HALF_WIDTH = 8


def make_stack() -> np.ndarray:
    """Camera-like noise with a few bright spots, uint16."""
    rng = np.random.default_rng(0)
    stack = rng.normal(300, 20, SHAPE).clip(0, 65535).astype(np.uint16)
    for _ in range(200):
        z, y, x = (int(rng.integers(0, s)) for s in SHAPE)
        stack[max(0, z - 2):z + 3, max(0, y - 4):y + 5, max(0, x - 4):x + 5] += 3000
    return stack


def sweep() -> list[int]:
    """z values from the first full slab to the last and back, one step at a time."""
    up = list(range(HALF_WIDTH, SHAPE[0] - HALF_WIDTH))
    return up + up[::-1][1:]


def measure(viewer, stack: np.ndarray) -> tuple[list[float], list[float], list[float], int]:
    """Per slider step: seconds to the image pushed, to the step's end, and numpy's slab max."""
    widget = viewer.widget  # builds the BokehModel, so every change is serialised and sent
    pushed_at: list[float] = []
    original_send = viewer.bokeh.send

    def timed_send(content, buffers=None):
        result = original_send(content, buffers)
        if buffers:  # the image's bytes: the push is done when the comm has them
            pushed_at.append(time.perf_counter())
        return result

    viewer.bokeh.send = timed_send
    push_times, step_times, numpy_times = [], [], []
    viewer.z_slider.value = HALF_WIDTH  # warm up
    for z in sweep()[1:]:
        before = len(pushed_at)
        start = time.perf_counter()
        viewer.z_slider.value = z
        end = time.perf_counter()
        assert len(pushed_at) == before + 1, "the step did not push exactly one image"
        push_times.append(pushed_at[-1] - start)
        step_times.append(end - start)
        start = time.perf_counter()
        reference = stack[z - HALF_WIDTH:z + HALF_WIDTH + 1].max(axis=0)
        numpy_times.append(time.perf_counter() - start)
        assert np.array_equal(viewer.current, reference)
    viewer.bokeh.send = original_send
    assert widget is viewer.widget
    return push_times, step_times, numpy_times, len(pushed_at)


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def main() -> None:
    stack = make_stack()
    viewer = view_stack(stack, z=HALF_WIDTH, half_width=HALF_WIDTH)
    push, step, bare, pushes = measure(viewer, stack)
    print(f"stack: {SHAPE[0]} x {SHAPE[1]} x {SHAPE[2]} uint16, slab {2 * HALF_WIDTH + 1} planes, "
          f"{len(push)} slider steps, medians")
    print(f"viewer_value_to_pushed_ms: {median_ms(push):.2f}")
    print(f"numpy_slab_max_ms: {median_ms(bare):.2f}")
    print(f"viewer_over_numpy: {median_ms(push) / median_ms(bare):.2f}")
    print(f"viewer_whole_step_ms: {median_ms(step):.2f} (also updating the sliders and info line)")
    print(f"pushes: {pushes} of {SHAPE[1] * SHAPE[2] * 2} bytes")

    import tifffile

    from autotx_lib.imaging.readers import open_image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.tif"
        tifffile.imwrite(path, stack, metadata={"axes": "ZYX"})
        with open_image(path) as image:
            lazy = view_stack(image, z=HALF_WIDTH, half_width=HALF_WIDTH)
            push, _, bare, _ = measure(lazy, stack)
            print(f"lazy_image_value_to_pushed_ms: {median_ms(push):.2f}")
            print(f"lazy_image_over_numpy: {median_ms(push) / median_ms(bare):.2f}")
            print(f"lazy_image_planes_read: {lazy.planes_read} of {SHAPE[0]} "
                  f"(cache keeps recent planes)")


if __name__ == "__main__":
    main()
