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
  the slab moves, one new plane per step; the page cache is warm);
- ``composite_value_to_pushed_ms`` / ``numpy_composite_ms`` and ``composite_over_numpy``:
  the sweep in composite mode over 3 channels (the stack and two shifted copies), against
  numpy computing the same composite plainly (slab max of each channel, then scale, clip,
  tint and add in float32); target <= 2. ``composite_rgba_ms`` is the viewer's own
  computation without the push.

Run: ``.venv/bin/python benchmarks/viewer.py``
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from autotx_lib.imaging.composite import composite_rgba, parse_color
from autotx_lib.imaging.viewer import view_stack

SHAPE = (64, 1024, 1024)
HALF_WIDTH = 8
COMPOSITE_CHANNELS = 3


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


def measure(viewer, stack: np.ndarray, reference=None, shown=None
            ) -> tuple[list[float], list[float], list[float], int]:
    """Per slider step: seconds to the image pushed, to the step's end, and the reference's.

    The reference is numpy's slab max of ``stack`` (Z, Y, X) unless ``reference(z)`` is
    given; ``shown()`` is what the viewer displays, compared with the reference's result.
    """
    if reference is None:
        def reference(z):
            return stack[z - HALF_WIDTH:z + HALF_WIDTH + 1].max(axis=0)
    if shown is None:
        def shown():
            return viewer.current
    widget = viewer.widget  # builds the BokehModel, so every change is serialised and sent
    pushed_at: list[float] = []
    original_send = viewer.bokeh.send

    def timed_send(content, buffers=None):
        result = original_send(content, buffers)
        if buffers:  # the image's bytes: the push is done when the comm has them
            pushed_at.append(time.perf_counter())
        return result

    viewer.bokeh.send = timed_send
    push_times, step_times, reference_times = [], [], []
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
        expected = reference(z)
        reference_times.append(time.perf_counter() - start)
        assert np.array_equal(shown(), expected)
    viewer.bokeh.send = original_send
    assert widget is viewer.widget
    return push_times, step_times, reference_times, len(pushed_at)


def numpy_composite(planes: list[np.ndarray], colors: list[tuple[int, int, int]],
                    limits: list[tuple[float, float]]) -> np.ndarray:
    """The composite written plainly in numpy (float32): scale, clip, tint, add, saturate, pack."""
    total = np.zeros(planes[0].shape + (3,), np.float32)
    for plane, color, (low, high) in zip(planes, colors, limits, strict=True):
        level = (plane.astype(np.float32) - np.float32(low)) * np.float32(1 / (high - low))
        np.clip(level, 0, 1, out=level)
        total += level[..., None] * np.asarray(color, np.float32)
    np.minimum(total, 255, out=total)
    rgba = np.empty(planes[0].shape + (4,), np.uint8)
    rgba[..., :3] = total + 0.5
    rgba[..., 3] = 255
    return rgba.view(np.uint32)[..., 0]


def composite_benchmark(stack: np.ndarray) -> None:
    """The z sweep in composite mode over COMPOSITE_CHANNELS channels."""
    rng = np.random.default_rng(1)
    channels = np.stack([stack] + [np.roll(stack, int(rng.integers(1, 500)), axis=2)
                                   for _ in range(COMPOSITE_CHANNELS - 1)])
    viewer = view_stack(channels, z=HALF_WIDTH, half_width=HALF_WIDTH)
    colors = [parse_color(c) for c in viewer.channel_colors]
    limits = viewer.channel_contrast

    def slabs(z):
        return [channels[c, z - HALF_WIDTH:z + HALF_WIDTH + 1].max(axis=0)
                for c in range(COMPOSITE_CHANNELS)]

    def plain(z):
        return numpy_composite(slabs(z), colors, limits)

    def ours(z):
        return composite_rgba(slabs(z), colors, limits)

    # the plain formula rounds differently by at most a level: compare it apart, once
    difference = np.abs(plain(HALF_WIDTH).view(np.uint8).astype(int)
                        - ours(HALF_WIDTH).view(np.uint8).astype(int)).max()
    assert difference <= COMPOSITE_CHANNELS, difference
    push, step, ours_times, pushes = measure(viewer, stack, reference=ours,
                                             shown=lambda: viewer.composite_image)
    plain_times = []
    for z in sweep()[1:]:
        start = time.perf_counter()
        plain(z)
        plain_times.append(time.perf_counter() - start)
    print(f"composite: {COMPOSITE_CHANNELS} channels, each as above")
    print(f"composite_value_to_pushed_ms: {median_ms(push):.2f}")
    print(f"numpy_composite_ms: {median_ms(plain_times):.2f} (slab max per channel, then "
          "scale, tint, add in float32)")
    print(f"composite_over_numpy: {median_ms(push) / median_ms(plain_times):.2f}")
    print(f"composite_rgba_ms: {median_ms(ours_times):.2f} (slab max per channel, then "
          "composite_rgba: the viewer's own computation, without the push)")
    print(f"composite_whole_step_ms: {median_ms(step):.2f}")
    print(f"composite_pushes: {pushes}")


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
    composite_benchmark(stack)


if __name__ == "__main__":
    main()
