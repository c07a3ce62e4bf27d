"""Per-image QC metrics: CellProfiler's numbers, the literature's focus measures, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile

from autotx_lib.imaging import qc

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _cellprofiler_reference as cp  # noqa: E402

HCS = "hcs"
REAL_IMAGES = [
    f"{HCS}/ImageXpress_9987_Plate_3435/TimePoint_1/9987_B02_s1_w1.TIF",  # uint16 256x256
    f"{HCS}/ImageXpress_9987_Plate_3435/TimePoint_1/9987_B03_s2_w2.TIF",
    f"{HCS}/Cellomics_ExampleHuman_D03/AS_09125_050116030001_D03f00d1.tif",  # uint8 512x512
    f"{HCS}/Cellomics_BBBC016_rowO/AS_09047_050428030001_O03f00d2.TIF",  # uint8, gradient
    f"{HCS}/BBBC022_crop/IXMtest_A02_s9.tif",  # uint16 395x695 (first channel)
    "zstack/pycudadecon_psf_bead_LLS.tif",  # bead PSF, plane 30
]


def _plane(path: Path) -> np.ndarray:
    data = tifffile.imread(path)
    while data.ndim > 2:
        data = data[data.shape[0] // 2]
    return data


@pytest.fixture(scope="module", params=REAL_IMAGES, ids=lambda p: Path(p).name)
def real_plane(request, sampledata) -> np.ndarray:
    return _plane(sampledata / request.param)


def _assert_close(ours: dict, reference: dict, rtol: float = 1e-9) -> None:
    for name, expected in reference.items():
        assert ours[name] == pytest.approx(expected, rel=rtol, abs=1e-300), name


# --- against CellProfiler's own way of computing --------------------------------------


def test_cellprofiler_set_matches_reference_on_real_images(real_plane):
    reference = cp.cellprofiler_metrics(real_plane, scale=20)
    ours = qc.measure_image(real_plane, "cellprofiler", window=20)
    assert set(ours) == set(reference)
    _assert_close(ours, reference)
    assert all(type(v) is float for v in ours.values())


@pytest.mark.parametrize("window", [7, 20, 33])
def test_local_focus_score_matches_reference_for_uneven_tiles(real_plane, window):
    # tiles that do not divide the image: CellProfiler's int(i * m / rows) assignment
    crop = real_plane[: real_plane.shape[0] - 5, : real_plane.shape[1] - 3]
    _, expected = cp.focus_scores(cp.cellprofiler_scaled(crop), window)
    assert qc.local_focus_score(crop, window=window) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.float32, np.float64]
)
def test_every_dtype_matches_reference_and_returns_float(dtype):
    rng = np.random.default_rng(7)
    base = rng.gamma(2.0, 30.0, size=(97, 131)) + ndi.gaussian_filter(
        rng.random((97, 131)) * 200, 3
    )
    image = base.astype(dtype) if np.dtype(dtype).kind != "f" else (base / 400).astype(dtype)
    reference = cp.cellprofiler_metrics(image, scale=20)
    ours = qc.measure_image(image, "cellprofiler")
    _assert_close(ours, reference)
    assert all(isinstance(v, float) for v in ours.values())


def test_power_log_log_slope_matches_reference_on_non_square_and_tiny_images():
    rng = np.random.default_rng(3)
    for shape in [(64, 200), (201, 57), (40, 40), (23, 23)]:
        image = ndi.gaussian_filter(rng.random(shape), 1.5)
        assert qc.power_log_log_slope(image) == pytest.approx(
            cp.power_log_log_slope(image), rel=1e-9, abs=1e-12
        ), shape


# --- constructed cases with known answers ---------------------------------------------


def test_focus_score_by_hand():
    image = np.array([[0, 2], [2, 0]], dtype=np.uint8)
    # mean 1, sum of squared deviations 4, N 4 -> 4 / (4 * 1) = 1 in raw units
    assert qc.focus_score(image, scale="raw") == 1.0
    assert qc.focus_score(image) == pytest.approx(1.0 / 255)
    assert qc.focus_score(np.zeros((5, 5), np.uint16)) == 0.0
    assert qc.focus_score(-np.ones((5, 5))) == 0.0  # mean <= 0 -> 0, as CellProfiler


def test_blurred_copy_scores_lower_focus(sampledata):
    sharp = _plane(sampledata / REAL_IMAGES[2]).astype(np.float64)
    blurred = ndi.gaussian_filter(sharp, 3)
    # not local_focus_score: CellProfiler's code returns var/median of the tile scores,
    # which can *rise* with blur (the median falls faster than the variance); we match it
    for metric in ("focus_score", "laplacian_variance", "tenengrad"):
        before = qc.measure_image(sharp, [metric])[metric]
        after = qc.measure_image(blurred, [metric])[metric]
        assert after < before, metric
    # blur concentrates power at low frequencies: the log-log slope gets steeper
    assert qc.power_log_log_slope(blurred) < qc.power_log_log_slope(sharp)


def test_focus_falls_monotonically_with_blur():
    rng = np.random.default_rng(0)
    image = (rng.random((128, 128)) * 1000).astype(np.uint16)
    scores = [
        qc.laplacian_variance(ndi.gaussian_filter(image.astype(float), s)) for s in (0.5, 1, 2, 4)
    ]
    assert scores == sorted(scores, reverse=True)


def test_saturated_image_reports_the_right_percentage():
    image = np.full((100, 100), 1000, dtype=np.uint16)
    image[:5, :] = 65535  # 500 of 10000 pixels at the ceiling
    image[50, 50] = 10  # a unique minimum
    stats = qc.saturation_statistics(image)
    assert stats == {"percent_maximal": 5.0, "percent_minimal": 0.01, "percent_saturated": 5.0}
    # a 12-bit camera stored in 16 bits saturates at 4095
    twelve = np.full((10, 10), 100, dtype=np.uint16)
    twelve[0] = 4095
    assert qc.percent_saturated(twelve) == 0.0
    assert qc.percent_saturated(twelve, ceiling=4095) == 10.0
    assert qc.percent_maximal(twelve) == 10.0
    # float images have no ceiling unless told
    assert np.isnan(qc.percent_saturated(np.ones((3, 3))))
    assert qc.percent_saturated(np.ones((3, 3)), ceiling=1.0) == 100.0


def test_intensity_statistics_against_numpy(real_plane):
    ours = qc.intensity_statistics(real_plane, scale="raw")
    x = real_plane.astype(np.float64)
    median = np.median(x)
    expected = {
        "mean_intensity": x.mean(),
        "median_intensity": median,
        "std_intensity": x.std(),
        "mad_intensity": np.median(np.abs(x - median)),
        "min_intensity": x.min(),
        "max_intensity": x.max(),
        "total_intensity": x.sum(),
    }
    _assert_close(ours, expected, rtol=1e-12)


def test_laplacian_and_tenengrad_against_scipy(real_plane):
    x = real_plane.astype(np.float64)
    lap = ndi.laplace(x)[1:-1, 1:-1]
    assert qc.laplacian_variance(real_plane, scale="raw") == pytest.approx(np.var(lap), rel=1e-9)
    gx = ndi.sobel(x, axis=1)[1:-1, 1:-1]
    gy = ndi.sobel(x, axis=0)[1:-1, 1:-1]
    assert qc.tenengrad(real_plane, scale="raw") == pytest.approx(
        np.mean(gx**2 + gy**2), rel=1e-9
    )


def test_scaling_options_are_consistent():
    rng = np.random.default_rng(1)
    image = rng.integers(100, 4000, size=(80, 90)).astype(np.uint16)
    dtype_scaled = qc.measure_image(image)
    raw = qc.measure_image(image, scale="raw")
    twelve_bit = qc.measure_image(image, scale=4095)
    assert raw["focus_score"] == pytest.approx(dtype_scaled["focus_score"] * 65535)
    assert raw["mean_intensity"] == pytest.approx(twelve_bit["mean_intensity"] * 4095)
    assert raw["tenengrad"] == pytest.approx(dtype_scaled["tenengrad"] * 65535**2)
    for name in ("power_log_log_slope", "percent_maximal", "percent_minimal"):
        assert raw[name] == dtype_scaled[name]


def test_constant_and_tiny_images_give_zeros_not_errors():
    flat = np.full((30, 30), 7, dtype=np.uint8)
    values = qc.measure_image(flat)
    for name in ("focus_score", "local_focus_score", "power_log_log_slope",
                 "laplacian_variance", "tenengrad", "std_intensity", "mad_intensity"):
        assert values[name] == 0.0, name
    assert values["percent_maximal"] == values["percent_minimal"] == 100.0
    one = qc.measure_image(np.array([[5]], dtype=np.uint16))
    assert one["power_log_log_slope"] == 0.0 and one["laplacian_variance"] == 0.0


# --- masks ---------------------------------------------------------------------------------


def test_all_true_mask_equals_no_mask(real_plane):
    mask = np.ones(real_plane.shape, dtype=bool)
    assert qc.measure_image(real_plane, mask=mask) == qc.measure_image(real_plane)


def test_masked_metrics_measure_only_the_masked_pixels(real_plane):
    mask = np.zeros(real_plane.shape, dtype=bool)
    mask[10:-20, 5:-7] = True
    mask[40:60, 40:60] = False
    pixels = real_plane[mask]
    # focus and intensity: the same formulas over the selected pixels
    assert qc.focus_score(real_plane, mask=mask) == pytest.approx(
        qc.focus_score(pixels[None, :]), rel=1e-9
    )
    ours = qc.intensity_statistics(real_plane, mask=mask)
    assert ours["median_intensity"] == pytest.approx(
        np.median(cp.cellprofiler_scaled(pixels)), rel=1e-12
    )
    # local focus: CellProfiler puts masked pixels in label 0; recompute with scipy labels
    x = cp.cellprofiler_scaled(real_plane)
    rows, cols = x.shape
    m, n = (rows + 19) // 20, (cols + 19) // 20
    i = (np.arange(rows) * m / rows).astype(int)
    j = (np.arange(cols) * n / cols).astype(int)
    grid = i[:, None] * n + j[None, :] + 1
    grid[~mask] = 0
    labels = np.arange(1, m * n + 1)
    counts = ndi.sum(np.ones_like(x), grid, labels)
    with np.errstate(invalid="ignore"):
        means = ndi.mean(x, grid, labels)
    keep = (counts > 0) & (means != 0)
    ssd = ndi.sum((x - np.concatenate([[0], means])[grid]) ** 2, grid, labels)
    v = ssd[keep] / (counts[keep] * means[keep])
    expected = np.var(v) / np.median(v)
    assert qc.local_focus_score(real_plane, mask=mask) == pytest.approx(expected, rel=1e-9)


def test_empty_mask_gives_zeros():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    values = qc.measure_image(image, mask=np.zeros((4, 4), bool))
    assert values["focus_score"] == 0.0 and values["percent_maximal"] == 0.0


# --- batch form and bad input --------------------------------------------------------------


def test_measure_images_returns_one_row_per_plane():
    stack = np.zeros((3, 16, 16), dtype=np.uint8)
    stack[1] = 255
    stack[2, :8] = 255
    table = qc.measure_images(stack, ["percent_saturated", "mean_intensity"], names=["a", "b", "c"])
    assert list(table.index) == ["a", "b", "c"]
    assert table["percent_saturated"].tolist() == [0.0, 100.0, 50.0]
    assert table.dtypes.unique().tolist() == [np.dtype("float64")]


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((2, 8, 8)), ValueError, "single 2-D plane"),
        (np.zeros(8), ValueError, "single 2-D plane"),
        (np.zeros((0, 5)), ValueError, "empty"),
        (np.zeros((4, 4), complex), TypeError, "numpy.abs"),
        (np.array([["a", "b"]]), TypeError, "numeric"),
    ],
)
def test_bad_images_raise_with_a_hint(image, error, match):
    with pytest.raises(error, match=match):
        qc.focus_score(image)


def test_bad_options_raise_with_a_hint():
    image = np.ones((8, 8), np.uint8)
    with pytest.raises(ValueError, match="unknown metric"):
        qc.measure_image(image, ["focus", "mean_intensity"])
    with pytest.raises(ValueError, match="scale must be"):
        qc.focus_score(image, scale="bits")
    with pytest.raises(ValueError, match="positive"):
        qc.focus_score(image, scale=0)
    with pytest.raises(ValueError, match="mask has shape"):
        qc.focus_score(image, mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="window"):
        qc.local_focus_score(image, window=0)
    with pytest.raises(ValueError, match="measure_image"):
        qc.measure_images(image)
