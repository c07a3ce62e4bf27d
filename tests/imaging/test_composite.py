"""imaging.composite: channel colours (file, wavelength, fallback) and the additive composite."""

from __future__ import annotations

import numpy as np
import pytest

from autotx_lib.imaging.composite import (
    FALLBACK_COLOURS,
    channel_colors,
    color_hex,
    composite_rgba,
    fallback_color,
    image_channel_colors,
    parse_color,
    wavelength_color,
)
from autotx_lib.imaging.readers import ArrayReader, open_image


def rgba_of(packed: np.ndarray) -> np.ndarray:
    """(Y, X, 4) uint8 components of packed RGBA pixels."""
    return packed.view(np.uint8).reshape(packed.shape + (4,))


def reference_composite(images, colors, limits) -> np.ndarray:
    """The composite written plainly in float64: scale, clip, tint, add, saturate."""
    total = np.zeros(images[0].shape + (3,))
    for image, color, (low, high) in zip(images, colors, limits, strict=True):
        level = np.clip((image.astype(np.float64) - low) / (high - low), 0, 1)
        total += level[..., None] * np.asarray(parse_color(color), np.float64)
    return np.minimum(total, 255)


# --- the composite ----------------------------------------------------------------------


def test_one_channel_runs_from_black_at_low_to_its_colour_at_high():
    image = np.array([[0, 100, 150, 200, 300]], np.uint16)
    rgba = rgba_of(composite_rgba([image], ["#ff8000"], [(100, 200)]))
    assert rgba[0, :, :3].tolist() == [[0, 0, 0], [0, 0, 0], [128, 64, 0], [255, 128, 0],
                                       [255, 128, 0]]
    assert (rgba[..., 3] == 255).all()  # opaque


def test_channels_add_and_saturate():
    full = np.full((2, 2), 1000, np.uint16)
    rgba = rgba_of(composite_rgba([full, full], ["red", "green"], [(0, 1000)] * 2))
    assert rgba[0, 0].tolist() == [255, 255, 0, 255]  # red + green = yellow
    rgba = rgba_of(composite_rgba([full] * 3, ["red"] * 3, [(0, 1000)] * 3))
    assert rgba[0, 0].tolist() == [255, 0, 0, 255]  # saturates, never wraps around


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_composite_matches_the_plain_float_formula_for_every_dtype(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    top = min(info.max, 4000) if info else 4000.0
    images = [rng.uniform(0, top, (16, 20)).astype(dtype) for _ in range(3)]
    colors = ["#ff00ff", (0, 255, 0), "#2040ff"]
    limits = [(10, top * 0.6), (top * 0.2, top * 0.9), (0, top / 2)]
    rgba = rgba_of(composite_rgba(images, colors, limits))
    expected = reference_composite(images, colors, limits)
    # each channel is rounded to 256 levels before tinting: at most one step off per channel
    assert np.abs(rgba[..., :3].astype(float) - expected).max() <= 3


def test_raising_a_channels_upper_limit_never_brightens_a_pixel():
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 4096, (32, 32), dtype=np.uint16) for _ in range(2)]
    previous = None
    for high in (500, 1000, 2000, 4000):
        rgba = rgba_of(composite_rgba(images, ["cyan", "magenta"], [(0, high), (0, 3000)]))
        if previous is not None:
            assert (rgba <= previous).all() and (rgba < previous).any()
        previous = rgba


def test_views_of_other_arrays_are_composited_too():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    expected = composite_rgba([np.ascontiguousarray(image.T)], ["green"], [(0, 11)])
    np.testing.assert_array_equal(composite_rgba([image.T], ["green"], [(0, 11)]), expected)


def test_nan_is_black():
    image = np.array([[np.nan, 1.0]])
    assert rgba_of(composite_rgba([image], ["white"], [(0, 1)]))[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize(("args", "match"), [
    (([], [], []), "at least one channel"),
    (([np.zeros((2, 2))], ["red", "green"], [(0, 1)]), "one of each per channel"),
    (([np.zeros((2, 2)), np.zeros((2, 3))], ["red"] * 2, [(0, 1)] * 2), "one shape"),
    (([np.zeros((2, 2))], ["red"], [(5, 5)]), "low < high"),
    (([np.zeros((2, 2))], ["bright"], [(0, 1)]), "cannot read 'bright' as a colour"),
])
def test_composite_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        composite_rgba(*args)


# --- colours ----------------------------------------------------------------------------


def test_parse_color_reads_hex_names_and_tuples():
    assert parse_color("#FF8000") == (255, 128, 0) and parse_color(" green ") == (0, 255, 0)
    assert color_hex(parse_color("#abc")) == "#aabbcc"
    for bad in ("#12345", "#gggggg", (0, 0, 256), (1.5, 0, 0), None):
        with pytest.raises(ValueError, match="as a colour"):
            parse_color(bad)


@pytest.mark.parametrize(("nm", "dominant"), [
    (405, "blue"), (461, "blue"), (520, "green"), (545, "green"), (610, "red"), (670, "red"),
])
def test_wavelength_colours_follow_the_spectrum(nm, dominant):
    r, g, b = wavelength_color(nm)
    assert max((r, "red"), (g, "green"), (b, "blue"))[1] == dominant


def test_far_red_is_magenta_and_bad_wavelengths_are_refused():
    assert wavelength_color(750) == (255, 0, 255)
    with pytest.raises(ValueError, match="positive"):
        wavelength_color(-5)


def test_channel_colours_prefer_the_given_colour_then_the_wavelength_then_the_index():
    colours = channel_colors(3, colors=[None, "yellow", None], wavelengths=[520, 450, None])
    assert colours == [wavelength_color(520), (255, 255, 0), FALLBACK_COLOURS[2]]
    with pytest.raises(ValueError, match="2 entries for 3 channels"):
        channel_colors(3, colors=["red", "green"])


def test_twenty_channels_get_twenty_different_colours_as_a_spectrum():
    colours = [fallback_color(c, 20) for c in range(20)]
    assert len(set(colours)) == 20
    assert colours[0][2] == 255 and colours[-1] == (255, 0, 0)  # violet first, red last


def test_colours_from_the_files_metadata(sampledata):
    with open_image(sampledata / "nd2" / "arcadia_example-multichannel.nd2") as image:
        assert image.channel_names == ["Mono", "DAPI", "FITC BP", "TRITC BP"]
        hexes = [color_hex(c) for c in image_channel_colors(image)]
    assert hexes == ["#ffffff", "#0033ff", "#07ff00", "#ffbf00"]  # as NIS-Elements saved them


def test_unset_or_uniform_metadata_colours_fall_back_by_index(sampledata):
    # three channels, no Color attribute in the OME-XML
    with open_image(sampledata / "ome-tiff" / "ome_sample_multi-channel.ome.tif") as image:
        assert image_channel_colors(image) == list(FALLBACK_COLOURS[:3])
    plain = ArrayReader(np.zeros((1, 2, 1, 4, 4), np.uint8))
    assert image_channel_colors(plain) == list(FALLBACK_COLOURS[:2])


class DescribedReader(ArrayReader):
    """An in-memory image whose reader names each channel's light, as the readers do."""

    def __init__(self, data: np.ndarray, emission: list[float | None]) -> None:
        super().__init__(data)
        self.emission = emission

    @property
    def channels(self) -> list:
        from types import SimpleNamespace

        return [SimpleNamespace(name=n, excitation_nm=None, emission_nm=nm)
                for n, nm in zip(self.channel_names, self.emission, strict=True)]


def test_wavelengths_the_reader_gives_colour_the_channels():
    image = DescribedReader(np.zeros((1, 3, 1, 4, 4), np.uint8), [568.0, 517.0, None])
    # Zeiss LED555 / LED470 channels: orange and green, distinct; the third by index
    assert image_channel_colors(image) == [wavelength_color(568), wavelength_color(517),
                                           FALLBACK_COLOURS[2]]
    assert image_channel_colors(image)[0] == (255, 147, 0)


def test_a_lambda_sweep_gets_distinct_colours_in_wavelength_order():
    wavelengths = [500 + 15 * i for i in range(20)]  # many share a colour by wavelength
    colours = channel_colors(20, wavelengths=wavelengths)
    assert len(set(colours)) == 20
    reversed_colours = channel_colors(20, wavelengths=wavelengths[::-1])
    assert reversed_colours == colours[::-1]  # the order follows the wavelength
    few = channel_colors(3, wavelengths=[461, 520, 520])  # a few channels keep their colours
    assert few[1] == few[2]
