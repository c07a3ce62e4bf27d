"""imaging.viewer: the pure slab and contrast functions, and the viewer's behaviour."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bokeh", reason="the viewer needs bokeh (the viz extra)")
pytest.importorskip("jupyter_bokeh", reason="the viewer needs jupyter_bokeh (the viz extra)")

from autotx_lib.imaging.composite import composite_rgba  # noqa: E402
from autotx_lib.imaging.readers import ArrayReader, open_image  # noqa: E402
from autotx_lib.imaging.viewer import (  # noqa: E402
    PALETTES,
    StackViewer,
    auto_contrast,
    palette_colors,
    slab_mip,
    slab_range,
    view_stack,
)


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 60000, (9, 12, 10), dtype=np.uint16)


# --- slab_mip ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_slab_mip_is_the_max_over_the_clipped_slab(dtype):
    data = np.random.default_rng(2).normal(100, 30, (7, 5, 6)).astype(dtype)
    for z in range(7):
        for half in range(5):
            lo, hi = max(0, z - half), min(7, z + half + 1)
            result = slab_mip(data, z, half)
            assert result.dtype == data.dtype
            np.testing.assert_array_equal(result, data[lo:hi].max(axis=0))


def test_slab_mip_half_width_zero_is_the_plane_itself(stack):
    np.testing.assert_array_equal(slab_mip(stack, 4, 0), stack[4])


def test_slab_mip_grows_with_the_slab(stack):
    # a wider slab can only raise each pixel (max over a superset)
    previous = slab_mip(stack, 4, 0)
    for half in range(1, 6):
        wider = slab_mip(stack, 4, half)
        assert (wider >= previous).all()
        previous = wider
    np.testing.assert_array_equal(previous, stack.max(axis=0))  # clipped at both ends


def test_slab_range_clips_at_the_ends():
    assert slab_range(10, 0, 3) == (0, 4)
    assert slab_range(10, 9, 3) == (6, 10)
    assert slab_range(1, 0, 100) == (0, 1)


def test_slab_mip_on_dask_reads_only_the_slab(stack):
    da = pytest.importorskip("dask.array")
    read = []

    def plane(block_info=None):
        z = block_info[None]["array-location"][0][0]
        read.append(z)
        return stack[z : z + 1]

    lazy = da.map_blocks(plane, chunks=((1,) * 9, (12,), (10,)), dtype=stack.dtype)
    np.testing.assert_array_equal(slab_mip(lazy, 2, 1), stack[1:4].max(axis=0))
    assert sorted(read) == [1, 2, 3]


@pytest.mark.parametrize(("z", "half", "error", "match"), [
    (9, 0, IndexError, "z=9 is out of range"),
    (-1, 0, IndexError, "out of range"),
    (0, -1, ValueError, "negative"),
    (1.5, 0, TypeError, "z must be an int"),
    (0, True, TypeError, "half_width must be an int"),
])
def test_slab_mip_rejects_bad_indices(stack, z, half, error, match):
    with pytest.raises(error, match=match):
        slab_mip(stack, z, half)


def test_slab_mip_rejects_a_stack_that_is_not_3d():
    with pytest.raises(ValueError, match="must be 3-D"):
        slab_mip(np.zeros((2, 3, 4, 5)), 0, 0)
    with pytest.raises(ValueError, match="must be 3-D"):
        slab_mip([1, 2, 3], 0, 0)


# --- contrast and palettes -----------------------------------------------------------


def test_auto_contrast_follows_percentiles_and_ignores_outliers():
    image = np.full((100, 100), 100.0)
    image[:50] = 200.0
    image[0, 0] = 1e9  # one hot pixel must not set the upper limit
    low, high = auto_contrast(image)
    assert low == 100.0 and high == 200.0


def test_auto_contrast_of_a_flat_image_is_still_a_range():
    assert auto_contrast(np.full((8, 8), 7, np.uint16)) == (7.0, 8.0)
    assert auto_contrast(np.full((4, 4), np.nan)) == (0.0, 1.0)


def test_auto_contrast_rejects_bad_percentiles():
    with pytest.raises(ValueError, match="percentiles"):
        auto_contrast(np.zeros((4, 4)), (90, 10))
    with pytest.raises(ValueError, match="empty"):
        auto_contrast(np.zeros((0, 4)))


@pytest.mark.parametrize("name", PALETTES)
def test_every_palette_has_256_colours_from_dark(name):
    colours = palette_colors(name)
    assert len(colours) == 256
    assert all(c.startswith("#") and len(c) == 7 for c in colours)


def test_single_colour_luts_run_from_black_to_the_colour():
    assert palette_colors("Magenta")[0] == "#000000"
    assert palette_colors("Magenta")[-1] == "#ff00ff"
    with pytest.raises(ValueError, match="unknown palette 'Rainbow'"):
        palette_colors("Rainbow")


# --- the viewer ---------------------------------------------------------------------


def test_z_slider_and_slab_slider_push_the_projection(stack):
    viewer = view_stack(stack, z=3)
    widget = viewer.widget
    assert widget.children  # controls, bokeh view, info line
    np.testing.assert_array_equal(viewer.current, stack[3])
    viewer.z_slider.value = 6
    np.testing.assert_array_equal(viewer.source.data["image"][0], stack[6])
    viewer.slab_slider.value = 2
    np.testing.assert_array_equal(viewer.current, stack[4:9].max(axis=0))
    assert "max of planes 4..8" in viewer.info.value
    viewer.z_slider.value = 8  # clipped at the top
    np.testing.assert_array_equal(viewer.current, stack[6:9].max(axis=0))


def test_palette_and_contrast_controls_drive_the_colour_mapper(stack):
    viewer = view_stack(stack)
    viewer.widget  # noqa: B018
    viewer.palette_picker.value = "Green"
    assert tuple(viewer.color_mapper.palette) == palette_colors("Green")
    viewer.contrast_slider.value = (1000.0, 2000.0)
    assert (viewer.color_mapper.low, viewer.color_mapper.high) == (1000.0, 2000.0)
    viewer.auto_button.click()
    assert viewer.contrast == auto_contrast(viewer.current)
    assert viewer.contrast_slider.value == pytest.approx(viewer.contrast, rel=1e-3)


def test_channel_choice_by_index_and_name():
    data = np.stack([np.full((3, 4, 5), 10, np.uint16), np.full((3, 4, 5), 500, np.uint16)])
    image = ArrayReader(data, channel_names=["DAPI", "GFP"])
    viewer = view_stack(image, channel="GFP")
    assert viewer.channel == 1 and int(viewer.current.max()) == 500
    viewer.widget  # noqa: B018
    viewer.channel_picker.value = 0
    assert int(viewer.current.max()) == 10
    assert viewer.contrast[0] <= 10 < viewer.contrast[1]  # contrast follows the channel
    with pytest.raises(ValueError, match="channel 'RFP' is not in this image"):
        viewer.set(channel="RFP")
    with pytest.raises(IndexError, match="channel=2"):
        view_stack(image, channel=2)


class CountingReader(ArrayReader):
    """An in-memory image that records which planes were read."""

    def __init__(self, data: np.ndarray) -> None:
        self.read: list[tuple[int, int, int]] = []
        super().__init__(data)

    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        self.read.append((t, c, z))
        return super()._read_plane(scene, t, c, z)


def test_a_lazy_image_is_read_only_where_the_view_needs_it(stack):
    image = CountingReader(stack)
    viewer = view_stack(image, z=4, half_width=1)
    assert sorted(z for _, _, z in image.read) == [3, 4, 5]
    viewer.set(z=5)  # planes 4 and 5 are cached; only 6 is new
    assert sorted(z for _, _, z in image.read) == [3, 4, 5, 6]
    np.testing.assert_array_equal(viewer.current, stack[4:7].max(axis=0))
    assert viewer.planes_read == 4


def test_a_dask_array_is_viewed_lazily(stack):
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(stack, chunks=(1, 12, 10))
    viewer = view_stack(lazy, z=2, half_width=2)
    np.testing.assert_array_equal(viewer.current, stack[0:5].max(axis=0))


def test_orthogonal_views_cut_through_the_crosshair(stack):
    viewer = view_stack(stack, orthogonal=True)
    y, x = viewer.crosshair
    np.testing.assert_array_equal(viewer.xz_source.data["image"][0], stack[:, y, :])
    np.testing.assert_array_equal(viewer.yz_source.data["image"][0], stack[:, :, x].T)
    viewer.set(crosshair=(2, 7))
    np.testing.assert_array_equal(viewer.xz_source.data["image"][0], stack[:, 2, :])
    np.testing.assert_array_equal(viewer.yz_source.data["image"][0], stack[:, :, 7].T)
    viewer.set(orthogonal=False)
    assert not viewer.xz_figure.visible and not viewer.yz_figure.visible


def test_scale_bar_and_axes_use_physical_pixel_sizes(stack):
    from bokeh.models import HoverTool, ScaleBar

    viewer = view_stack(stack, pixel_sizes=(0.5, 0.2, 0.1))
    bars = [a for a in viewer.figure.center if isinstance(a, ScaleBar)]
    assert len(bars) == 1 and bars[0].unit == "µm"
    assert viewer.figure.x_range.end == pytest.approx(10 * 0.1)  # X pixels * x size
    assert viewer.figure.y_range.start == pytest.approx(12 * 0.2)  # flipped: row 0 on top
    hover = viewer.figure.select_one(HoverTool)
    assert ("value", "@image") in hover.tooltips
    plain = view_stack(stack)  # no sizes: pixels, no scale bar
    assert plain.scale_bar_unit == "px"
    assert not [a for a in plain.figure.center if isinstance(a, ScaleBar)]


def test_real_zstack_through_the_readers(sampledata):
    path = sampledata / "zstack" / "pycudadecon_psf_bead_LLS.tif"
    with open_image(path) as image:
        viewer = view_stack(image, half_width=3, palette="Inferno256")
        assert viewer.z == 30 and viewer.current.shape == (128, 128)
        assert viewer.planes_read == 7
        full = image.data[0, 0]
        np.testing.assert_array_equal(viewer.current, full[27:34].max(axis=0))
        # the bead is brightest near the middle of the stack: the slab MIP there beats an edge
        assert viewer.current.max() > slab_mip(full, 0, 3).max()


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"z": 99}, IndexError, "z=99"),
    ({"half_width": -2}, ValueError, "negative"),
    ({"palette": "Jet"}, ValueError, "unknown palette"),
    ({"contrast": (5, 5)}, ValueError, "low < high"),
])
def test_viewer_rejects_bad_options(stack, kwargs, error, match):
    with pytest.raises(error, match=match):
        StackViewer(stack, **kwargs)


def test_viewer_rejects_bad_arrays():
    with pytest.raises(ValueError, match="cannot be viewed as a stack"):
        view_stack(np.zeros(5))
    with pytest.raises(ValueError, match="empty"):
        view_stack(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="dtype"):
        view_stack(np.array([["a", "b"], ["c", "d"]]))


def test_a_bad_change_leaves_the_view_as_it_was(stack):
    viewer = view_stack(stack, z=2)
    before = viewer.current.copy()
    with pytest.raises(IndexError):
        viewer.set(z=2, crosshair=(50, 0))
    with pytest.raises(ValueError):
        viewer.set(z=3, contrast="bright")
    assert viewer.z == 2
    np.testing.assert_array_equal(viewer.current, before)


# --- the composite ------------------------------------------------------------------


@pytest.fixture
def channels() -> np.ndarray:
    """Three channels (C, Z, Y, X), each bright in its own box."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 50, (3, 7, 16, 18), dtype=np.uint16)
    data[0, :, 2:6, 2:6] += 1000
    data[1, :, 8:12, 2:6] += 2000
    data[2, 3, 8:12, 10:14] += 3000
    return data


def shown_composite(viewer, planes: list[np.ndarray], shown: list[int]) -> np.ndarray:
    return composite_rgba([planes[c] for c in shown],
                          [viewer.channel_colors[c] for c in shown],
                          [viewer.channel_contrast[c] for c in shown])


def test_several_channels_open_as_a_composite_that_follows_z(channels):
    viewer = view_stack(channels, z=2, half_width=1)
    assert viewer.composite and len(viewer.channel_colors) == 3
    assert viewer.channel_colors == ["#ff0000", "#00ff00", "#0000ff"]  # none given: by index
    projections = [channels[c, 1:4].max(axis=0) for c in range(3)]
    np.testing.assert_array_equal(viewer.composite_image,
                                  shown_composite(viewer, projections, [0, 1, 2]))
    np.testing.assert_array_equal(viewer.current, projections[0])  # the selected channel
    assert all(low < high for low, high in viewer.channel_contrast)  # automatic, per channel
    viewer.widget  # noqa: B018
    viewer.z_slider.value = 5
    projections = [channels[c, 4:7].max(axis=0) for c in range(3)]
    np.testing.assert_array_equal(viewer.source.data["rgba"][0],
                                  shown_composite(viewer, projections, [0, 1, 2]))
    assert "composite of 3/3 channels" in viewer.info.value


def test_channel_rows_toggle_recolour_and_rescale_the_composite(channels):
    viewer = view_stack(channels, z=3, colors=["magenta", "#00ff00", (0, 128, 255)])
    viewer.widget  # noqa: B018
    planes = [channels[c, 3] for c in range(3)]
    rows = viewer.channel_controls
    assert [row.color.value for row in rows] == ["#ff00ff", "#00ff00", "#0080ff"]
    rows[1].visible.value = False
    assert viewer.channel_visible == [True, False, True]
    np.testing.assert_array_equal(viewer.composite_image, shown_composite(viewer, planes, [0, 2]))
    rgba = viewer.composite_image.view(np.uint8).reshape(16, 18, 4)
    assert rgba[10, 4, :3].max() < 60  # channel 1's box is gone
    rows[0].color.value = "#ffff00"
    assert viewer.channel_colors[0] == "#ffff00"
    rows[2].contrast.value = (0.0, 2000.0)
    assert viewer.channel_contrast[2] == (0.0, 2000.0)
    np.testing.assert_array_equal(viewer.composite_image, shown_composite(viewer, planes, [0, 2]))
    rows[2].auto.click()
    assert viewer.channel_contrast[2] == auto_contrast(planes[2])
    for row in rows:
        row.visible.value = False
    assert "composite of 0/3 channels" in viewer.info.value
    black = viewer.composite_image.view(np.uint8).reshape(16, 18, 4)
    assert (black[..., :3] == 0).all() and (black[..., 3] == 255).all()


def test_composite_and_single_channel_modes_switch_renderers_and_controls(channels):
    viewer = view_stack(channels, channel=2)  # a channel asked for: shown alone
    assert not viewer.composite and viewer.composite_image is None
    viewer.widget  # noqa: B018
    mapped, rgba = viewer._renderers[0]
    assert mapped.visible and not rgba.visible and viewer.channel_panel.layout.display == "none"
    viewer.set_channel(2, contrast=(0.0, 4000.0))
    assert viewer.contrast == (0.0, 4000.0)
    assert (viewer.color_mapper.low, viewer.color_mapper.high) == (0.0, 4000.0)
    viewer.composite_box.value = True
    assert viewer.composite and rgba.visible and not mapped.visible
    assert viewer.channel_panel.layout.display == "" and viewer.palette_picker.layout.display == "none"
    assert viewer.channel_controls[2].contrast.value == (0.0, 4000.0)  # limits kept per channel
    viewer.set(composite=False)
    assert mapped.visible and viewer.contrast_slider.value == (0.0, 4000.0)
    np.testing.assert_array_equal(viewer.source.data["image"][0], channels[2, 3])


def test_twenty_channels_fit_in_a_scrolling_panel():
    data = np.random.default_rng(6).integers(0, 1000, (20, 3, 8, 8), dtype=np.uint16)
    viewer = view_stack(data)
    viewer.widget  # noqa: B018
    assert len(viewer.channel_controls) == 20 and len(set(viewer.channel_colors)) == 20
    panel = viewer.channel_panel.layout
    assert panel.max_height == "216px" and panel.overflow == "hidden auto"  # 7 rows, then a scroll bar
    assert all(row.box.layout.min_height == "30px" for row in viewer.channel_controls)
    np.testing.assert_array_equal(
        viewer.composite_image,
        shown_composite(viewer, [data[c, 1] for c in range(20)], list(range(20))))


def test_a_lazy_composite_reads_only_the_shown_channels(channels):
    image = CountingReader(channels[None])
    viewer = view_stack(image, z=1)
    assert sorted(image.read) == [(0, 0, 1), (0, 1, 1), (0, 2, 1)]
    viewer.set_channel(1, visible=False)
    viewer.set(z=2)
    assert sorted(image.read[3:]) == [(0, 0, 2), (0, 2, 2)]


def test_orthogonal_views_of_a_composite(channels):
    viewer = view_stack(channels, orthogonal=True)
    y, x = viewer.crosshair
    expected = shown_composite(viewer, [channels[c, :, y, :] for c in range(3)], [0, 1, 2])
    np.testing.assert_array_equal(viewer.xz_source.data["rgba"][0], expected)
    viewer.set_channel(0, visible=False)
    expected = shown_composite(viewer, [channels[c, :, :, x].T for c in range(3)], [1, 2])
    np.testing.assert_array_equal(viewer.yz_source.data["rgba"][0], expected)


def test_composite_of_a_real_file_uses_its_channel_colours(sampledata):
    with open_image(sampledata / "nd2" / "arcadia_example-multichannel.nd2") as image:
        viewer = view_stack(image)
        assert viewer.composite
        assert viewer.channel_colors == ["#ffffff", "#0033ff", "#07ff00", "#ffbf00"]
        planes = [image.plane(c=c) for c in range(4)]
        np.testing.assert_array_equal(viewer.composite_image,
                                      shown_composite(viewer, planes, [0, 1, 2, 3]))


def test_bad_channel_settings_leave_the_view_as_it_was(channels):
    viewer = view_stack(channels)
    before = viewer.composite_image.copy()
    with pytest.raises(ValueError, match="as a colour"):
        viewer.set_channel(0, visible=False, color="sparkly")
    with pytest.raises(ValueError, match="low < high"):
        viewer.set_channel(1, visible=False, contrast=(9, 1))
    with pytest.raises(ValueError, match="3 entries for 2 channels"):
        view_stack(channels[:2], colors=["red", "green", "blue"])
    assert viewer.channel_visible == [True, True, True]
    np.testing.assert_array_equal(viewer.composite_image, before)


def test_cached_planes_outlive_a_closed_file(sampledata):
    # the nd2 reader returns views of its memory-mapped file: touching one after close()
    # crashed the kernel; the viewer's cache keeps copies, and new reads say it is closed
    with open_image(sampledata / "nd2" / "arcadia_example-zstack.nd2") as image:
        viewer = view_stack(image, z=5)
        expected = image.plane(z=5).copy()
    viewer.set(z=5, contrast="auto")
    np.testing.assert_array_equal(viewer.current, expected)
    with pytest.raises(Exception, match="closed"):
        viewer.set(z=6)
    assert viewer.z == 5


def test_an_xz_scan_is_drawn_as_xz_with_its_depth_spacing(sampledata):
    """A Leica XZ plane's rows are depth: the axis says z, and the plane's height uses the
    z spacing (Bio-Formats draws it as XY with the Y spacing)."""
    image = open_image(sampledata / "lif/readlif_testdata_2channel_xz.lif")
    image.set_scene(2)  # "xz": one plane, rows are depth
    viewer = StackViewer(image)
    rows, columns = image.plane_pixel_size
    assert viewer.axis_names == ("y", "z", "x")
    assert viewer.figure.yaxis.axis_label == "z (µm)"
    assert viewer.figure.xaxis.axis_label == "x (µm)"
    assert viewer.figure.y_range.start == pytest.approx(image.dims.Y * rows)
    assert viewer.figure.x_range.end == pytest.approx(image.dims.X * columns)
    image.close()
