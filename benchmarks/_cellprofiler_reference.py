"""CellProfiler 4.2's image-quality metrics, computed the way CellProfiler computes them.

The one reference for ``tests/imaging/test_qc.py`` (values) and ``benchmarks/qc.py``
(speed). It follows MeasureImageQuality's ``calculate_focus_scores``,
``calculate_saturation``, ``run_intensity_measurement`` and
``calculate_power_spectrum``, and centrosome's ``radial_power_spectrum.rps``:
label-wise ``scipy.ndimage`` means and sums over a tile grid, a full complex FFT,
ring sums by ``scipy.ndimage.sum`` over every pixel, ``scipy.linalg.lstsq``.
Written independently of ``autotx_lib.imaging.qc`` on purpose: it shares no code.

Input: a float image already scaled the way CellProfiler loads it
(:func:`cellprofiler_scaled`), no mask.
"""

from __future__ import annotations

import numpy as np
import scipy.fftpack
import scipy.linalg
import scipy.ndimage


def cellprofiler_scaled(raw: np.ndarray) -> np.ndarray:
    """Integer images divided by their dtype's maximum, as CellProfiler loads them."""
    if raw.dtype.kind in "iu":
        return raw.astype(np.float64) / np.iinfo(raw.dtype).max
    return raw.astype(np.float64)


def _fix(result) -> np.ndarray:
    # centrosome.cpmorphology.fixup_scipy_ndimage_result: always an array
    return np.atleast_1d(np.asarray(result, dtype=np.float64))


def focus_scores(pixel_data: np.ndarray, scale: int = 20) -> tuple[float, float]:
    """(FocusScore, LocalFocusScore at ``scale``)."""
    shape = pixel_data.shape
    focus_score = 0.0
    mean_image_value = np.mean(pixel_data)
    squared_normalized_image = (pixel_data - mean_image_value) ** 2
    if mean_image_value > 0:
        focus_score = np.sum(squared_normalized_image) / (np.prod(shape) * mean_image_value)

    i, j = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    m, n = (np.array(shape) + scale - 1) // scale
    i = (i * float(m) / float(shape[0])).astype(int)
    j = (j * float(n) / float(shape[1])).astype(int)
    grid = i * n + j + 1
    grid_range = np.arange(0, m * n + 1, dtype=np.int32)
    with np.errstate(invalid="ignore"):  # label 0 (masked pixels) is empty: NaN, as in CP
        local_means = _fix(scipy.ndimage.mean(pixel_data, grid, grid_range))
    local_squared_normalized_image = (pixel_data - local_means[grid]) ** 2
    grid_mask = (local_means != 0) & ~np.isnan(local_means)
    nz_grid_range = grid_range[grid_mask]
    if len(nz_grid_range) and nz_grid_range[0] == 0:
        nz_grid_range = nz_grid_range[1:]
        local_means = local_means[1:]
        grid_mask = grid_mask[1:]
    local_focus_score = 0.0
    if len(nz_grid_range):
        sums = _fix(scipy.ndimage.sum(local_squared_normalized_image, grid, nz_grid_range))
        pixel_counts = _fix(scipy.ndimage.sum(np.ones(shape), grid, nz_grid_range))
        local_norm_var = sums / (pixel_counts * local_means[grid_mask])
        local_norm_median = np.median(local_norm_var)
        if np.isfinite(local_norm_median) and local_norm_median > 0:
            local_focus_score = np.var(local_norm_var) / local_norm_median
    return float(focus_score), float(local_focus_score)


def saturation(pixel_data: np.ndarray) -> tuple[float, float]:
    """(PercentMaximal, PercentMinimal)."""
    pixel_count = np.prod(pixel_data.shape)
    maximal = np.sum(pixel_data == np.max(pixel_data))
    minimal = np.sum(pixel_data == np.min(pixel_data))
    return 100.0 * float(maximal) / float(pixel_count), 100.0 * float(minimal) / float(pixel_count)


def intensity(pixels: np.ndarray) -> dict[str, float]:
    """Total, mean, median, std, MAD, min, max intensity."""
    pixel_count = np.prod(pixels.shape)
    pixel_sum = np.sum(pixels)
    pixel_median = np.median(pixels)
    return {
        "total_intensity": float(pixel_sum),
        "mean_intensity": float(pixel_sum / float(pixel_count)),
        "median_intensity": float(pixel_median),
        "std_intensity": float(np.std(pixels)),
        "mad_intensity": float(np.median(np.abs(pixels - pixel_median))),
        "min_intensity": float(np.min(pixels)),
        "max_intensity": float(np.max(pixels)),
    }


def rps(img: np.ndarray):
    """centrosome.radial_power_spectrum.rps: ring radii, magnitude and power sums."""
    radii2 = (np.arange(img.shape[0]).reshape((img.shape[0], 1)) ** 2) + (
        np.arange(img.shape[1]) ** 2
    )
    radii2 = np.minimum(radii2, np.flipud(radii2))
    radii2 = np.minimum(radii2, np.fliplr(radii2))
    maxwidth = min(img.shape[0], img.shape[1]) / 8.0
    if np.ptp(img) > 0:
        img = img / np.median(abs(img - img.mean()))
    mag = abs(scipy.fftpack.fft2(img - np.mean(img)))
    power = mag**2
    radii = np.floor(np.sqrt(radii2)).astype(int) + 1
    labels = np.arange(2, np.floor(maxwidth)).astype(int).tolist()
    if len(labels) > 0:
        magsum = scipy.ndimage.sum(mag, radii, labels)
        powersum = scipy.ndimage.sum(power, radii, labels)
        return np.array(labels), np.array(magsum), np.array(powersum)
    return np.array([2]), np.array([0.0]), np.array([0.0])


def power_log_log_slope(pixel_data: np.ndarray) -> float:
    """PowerLogLogSlope as MeasureImageQuality.calculate_power_spectrum computes it."""
    radii, magnitude, power = rps(pixel_data)
    if sum(magnitude) > 0 and len(np.unique(pixel_data)) > 1:
        valid = magnitude > 0
        radii = radii[valid].reshape((-1, 1))
        power = power[valid].reshape((-1, 1))
        if radii.shape[0] > 1:
            with np.errstate(divide="ignore"):
                idx = np.isfinite(np.log(power))
            design = np.hstack(
                (
                    np.log(radii)[idx][:, np.newaxis],
                    np.ones(radii.shape)[idx][:, np.newaxis],
                )
            )
            return float(scipy.linalg.lstsq(design, np.log(power)[idx][:, np.newaxis])[0][0][0])
    return 0.0


def cellprofiler_metrics(raw: np.ndarray, scale: int = 20) -> dict[str, float]:
    """The CellProfiler set on one raw plane, named like ``autotx_lib.imaging.qc``."""
    pixel_data = cellprofiler_scaled(raw)
    focus, local = focus_scores(pixel_data, scale)
    maximal, minimal = saturation(pixel_data)
    result = {
        "focus_score": focus,
        "local_focus_score": local,
        "power_log_log_slope": power_log_log_slope(pixel_data),
        "percent_maximal": maximal,
        "percent_minimal": minimal,
    }
    result.update(intensity(pixel_data))
    return result
