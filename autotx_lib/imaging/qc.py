"""Per-image quality metrics: focus, intensity and saturation, CellProfiler-faithful.

Every metric is a pure function of one 2-D plane: any dtype in, a float64 ``float``
out, no I/O. Where CellProfiler's ``MeasureImageQuality`` module (4.2) defines a
metric, the formula here is the one its *code* computes, so numbers are comparable
with what facilities already record:

========================  ============================================================
ours                      CellProfiler feature (``ImageQuality_...``)
========================  ============================================================
``focus_score``           ``FocusScore``
``local_focus_score``     ``LocalFocusScore_<window>``
``power_log_log_slope``   ``PowerLogLogSlope``
``percent_maximal``       ``PercentMaximal``
``percent_minimal``       ``PercentMinimal``
``total_intensity``       ``TotalIntensity`` (and mean, median, std, MAD, min, max)
========================  ============================================================

Scaling
-------
CellProfiler measures integer images scaled to [0, 1] by their bit depth (a
``uint16`` image is divided by 65535). Every function here does the same by default
(``scale="dtype"``); ``scale="raw"`` measures in the stored units, and a number
divides by that number instead (``scale=4095`` for a 12-bit camera stored in 16 bits).
Floating-point and boolean images are taken as they are under ``"dtype"``.

Speed
-----
The numbers equal CellProfiler's to about 1e-12 relative, but the way there is
different: integer images of up to 16 bits are summarised once by a histogram
(``numpy.bincount``), which gives sums, extremes, medians and MADs exactly; tiles are
summed with ``numpy.add.reduceat``; and the radial power spectrum only evaluates the
low-frequency corners CellProfiler keeps, from a real FFT. ``benchmarks/qc.py``
measures the difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ALL_METRICS",
    "CELLPROFILER_METRICS",
    "INTENSITY_METRICS",
    "SATURATION_METRICS",
    "FOCUS_METRICS",
    "focus_score",
    "local_focus_score",
    "power_log_log_slope",
    "laplacian_variance",
    "tenengrad",
    "intensity_statistics",
    "saturation_statistics",
    "percent_maximal",
    "percent_minimal",
    "percent_saturated",
    "measure_image",
    "measure_images",
]

FOCUS_METRICS: tuple[str, ...] = (
    "focus_score",
    "local_focus_score",
    "power_log_log_slope",
    "laplacian_variance",
    "tenengrad",
)
INTENSITY_METRICS: tuple[str, ...] = (
    "mean_intensity",
    "median_intensity",
    "std_intensity",
    "mad_intensity",
    "min_intensity",
    "max_intensity",
    "total_intensity",
)
SATURATION_METRICS: tuple[str, ...] = ("percent_maximal", "percent_minimal", "percent_saturated")
ALL_METRICS: tuple[str, ...] = FOCUS_METRICS + INTENSITY_METRICS + SATURATION_METRICS
#: The metrics CellProfiler's MeasureImageQuality computes (blur, saturation, intensity).
CELLPROFILER_METRICS: tuple[str, ...] = (
    "focus_score",
    "local_focus_score",
    "power_log_log_slope",
    "percent_maximal",
    "percent_minimal",
) + INTENSITY_METRICS


# --- input handling ------------------------------------------------------------------


def _check_plane(image: Any, name: str = "image") -> np.ndarray:
    array = np.asarray(image)
    if array.dtype.kind == "c":
        raise TypeError(
            f"{name} has complex dtype {array.dtype}; quality metrics need real intensities. "
            f"Pass the magnitude, e.g. numpy.abs({name})."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected a numeric (integer, float or bool) array."
        )
    if array.ndim != 2:
        hint = ""
        if array.ndim > 2:
            hint = (
                f" Pick one plane first, e.g. {name}[0] or Image.plane(t=0, c=0, z=0); "
                "measure_images() takes a stack of planes."
            )
        raise ValueError(
            f"{name} must be a single 2-D plane (rows, columns); got shape {array.shape}.{hint}"
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); there is nothing to measure.")
    return array


def _check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(
            f"mask has shape {mask.shape} but the image has shape {shape}; they must match."
        )
    if mask.dtype != bool:
        if mask.dtype.kind not in "biu":
            raise TypeError(f"mask must be boolean (True = measure this pixel); got {mask.dtype}.")
        mask = mask.astype(bool)
    return None if mask.all() else mask


def _scale_factor(dtype: np.dtype, scale: str | float) -> float:
    if isinstance(scale, str):
        if scale == "raw":
            return 1.0
        if scale == "dtype":
            if dtype.kind in "iu":
                return float(np.iinfo(dtype).max)
            return 1.0
        raise ValueError(
            f"scale must be 'dtype' (CellProfiler's [0, 1] scaling), 'raw' or a positive "
            f"number; got {scale!r}."
        )
    value = float(scale)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"scale must be a positive number; got {scale!r}.")
    return value


def _median_from_sorted(values: np.ndarray, counts: np.ndarray, n: int) -> float:
    """Median (numpy's definition) of a sample given as sorted distinct values and counts."""
    cumulative = np.cumsum(counts)
    upper = values[np.searchsorted(cumulative, n // 2, side="right")]
    if n % 2:
        return float(upper)
    lower = values[np.searchsorted(cumulative, n // 2 - 1, side="right")]
    return (float(lower) + float(upper)) / 2.0


class _Plane:
    """One validated plane with lazily computed, shared intermediate results.

    Everything is in raw (stored) units; metrics divide by ``s`` at the end.
    """

    def __init__(self, image: Any, mask: Any = None, scale: str | float = "dtype"):
        self.raw = _check_plane(image)
        self.mask = _check_mask(mask, self.raw.shape)
        self.s = _scale_factor(self.raw.dtype, scale)
        self._cache: dict[str, Any] = {}

    # -- the sample of measured pixels -------------------------------------------------

    @property
    def histogrammable(self) -> bool:
        return self.raw.dtype.kind == "b" or (
            self.raw.dtype.kind in "iu" and self.raw.dtype.itemsize <= 2
        )

    @property
    def n(self) -> int:
        return int(self.raw.size if self.mask is None else np.count_nonzero(self.mask))

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct values (int64, ascending) and their counts (int64)."""
        if "hist" not in self._cache:
            data = self.raw if self.mask is None else self.raw[self.mask]
            data = data.ravel()
            if data.dtype.kind == "b":
                data = data.view(np.uint8)
            offset = 0
            if data.dtype.kind == "i":
                offset = int(np.iinfo(data.dtype).min)
                data = (data.astype(np.int32) - offset).astype(np.uint32)
            counts = np.bincount(data)
            occupied = np.flatnonzero(counts)
            self._cache["hist"] = (
                occupied.astype(np.int64) + offset,
                counts[occupied].astype(np.int64),
            )
        return self._cache["hist"]

    def pixels(self) -> np.ndarray:
        """The measured pixels as float64, 1-D (masked) or 2-D (no mask)."""
        if "pixels" not in self._cache:
            source = self.raw if self.mask is None else self.raw[self.mask]
            self._cache["pixels"] = source.astype(np.float64)
        return self._cache["pixels"]

    def full(self) -> np.ndarray:
        """The whole plane as float64 (raw units)."""
        if "full" not in self._cache:
            self._cache["full"] = (
                self.pixels() if self.mask is None else self.raw.astype(np.float64)
            )
        return self._cache["full"]

    def moments(self) -> dict[str, float]:
        """n, sum, sum of squared deviations, min, max, median, MAD, counts at extremes."""
        if "moments" in self._cache:
            return self._cache["moments"]
        n = self.n
        if n == 0:
            result = {"n": 0}
        elif self.histogrammable:
            values, counts = self.histogram()
            s1 = int(np.dot(values, counts))
            s2 = int(np.dot(values * values, counts))
            # exact integer arithmetic: n * sum((v - mean)^2) = n*S2 - S1^2
            ssd = (n * s2 - s1 * s1) / n
            median = _median_from_sorted(values.astype(np.float64), counts, n)
            doubled = np.abs(2 * values - int(round(2 * median)))
            dist_counts = np.bincount(doubled, weights=counts)
            dist_values = np.flatnonzero(dist_counts)
            mad = _median_from_sorted(
                dist_values / 2.0, dist_counts[dist_values].astype(np.int64), n
            )
            result = {
                "n": n,
                "sum": float(s1),
                "exact_sum": s1,
                "ssd": float(ssd),
                "min": float(values[0]),
                "max": float(values[-1]),
                "count_min": int(counts[0]),
                "count_max": int(counts[-1]),
                "median": median,
                "mad": mad,
            }
        else:
            x = self.pixels()
            total = float(np.sum(x))
            mean = total / n
            vmin, vmax = float(np.min(x)), float(np.max(x))
            median = float(np.median(x))
            result = {
                "n": n,
                "sum": total,
                "ssd": float(np.sum((x - mean) ** 2)),
                "min": vmin,
                "max": vmax,
                "count_min": int(np.count_nonzero(x == vmin)),
                "count_max": int(np.count_nonzero(x == vmax)),
                "median": median,
                "mad": float(np.median(np.abs(x - median))),
            }
        self._cache["moments"] = result
        return result

    def mean(self) -> float:
        m = self.moments()
        if m["n"] == 0:
            return 0.0
        return m["exact_sum"] / m["n"] if "exact_sum" in m else m["sum"] / m["n"]


def _tile_edges(length: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Start index of each tile along one axis, exactly as CellProfiler assigns pixels.

    CellProfiler labels pixel ``i`` with ``int(i * m / length)`` where
    ``m = ceil(length / window)``; the labels are monotone, so tiles are contiguous.
    """
    m = (length + window - 1) // window
    index = (np.arange(length, dtype=float) * float(m) / float(length)).astype(int)
    return np.flatnonzero(np.diff(index, prepend=-1)), index


# --- focus ---------------------------------------------------------------------------


def focus_score(image: Any, *, mask: Any = None, scale: str | float = "dtype") -> float:
    """CellProfiler's FocusScore: the normalized variance of the image.

    ``sum((I - mean)**2) / (N * mean)`` over the N measured pixels, and 0 when the
    mean is not positive (Sun, Duthaler & Nelson 2004, ranked it the best autofocus
    function). Higher is sharper, for the same field and staining.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, any real dtype.
    mask : (M, N) ndarray of bool, optional
        Pixels to measure (True); all by default.
    scale : {"dtype", "raw"} or float, optional
        ``"dtype"`` (default) divides integer images by their dtype's maximum, as
        CellProfiler does; ``"raw"`` keeps stored units; a number divides by it.

    Returns
    -------
    score : float
        The normalized variance, in the chosen intensity units.

    Examples
    --------
    >>> import numpy as np
    >>> focus_score(np.array([[0, 2], [2, 0]], dtype=np.uint8), scale="raw")
    1.0
    >>> focus_score(np.zeros((4, 4)))
    0.0
    """
    return _focus_score(_Plane(image, mask, scale))


def _focus_score(plane: _Plane) -> float:
    m = plane.moments()
    if m["n"] == 0:
        return 0.0
    if "exact_sum" in m:
        s1 = m["exact_sum"]
        if s1 <= 0:
            return 0.0
        # ssd / (n * mean) with mean = s1 / n, in scaled units (divide by s once)
        return float(m["ssd"] / (s1 * plane.s))
    mean = m["sum"] / m["n"]
    if mean <= 0:
        return 0.0
    return float(m["ssd"] / (m["n"] * mean) / plane.s)


def local_focus_score(
    image: Any, *, window: int = 20, mask: Any = None, scale: str | float = "dtype"
) -> float:
    """CellProfiler's LocalFocusScore: spread of the normalized variance over tiles.

    The image is cut into a grid of ``ceil(rows / window) x ceil(columns / window)``
    tiles (pixel ``i`` goes to tile ``int(i * m / rows)``, as in CellProfiler). For
    every tile with a non-zero mean, ``v_k = sum((I - mean_k)**2) / (n_k * mean_k)``.
    The score is ``var(v) / median(v)`` (population variance), and 0 when the median
    is not positive or no tile qualifies.

    CellProfiler's documentation describes the *mean* of the tile scores; its code
    (4.2, ``calculate_focus_scores``) returns var/median. We match the code.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, any real dtype.
    window : int, optional
        Tile size in pixels (CellProfiler's "spatial scale"), 20 by default.
    mask : (M, N) ndarray of bool, optional
        Pixels to measure (True); masked pixels belong to no tile.
    scale : {"dtype", "raw"} or float, optional
        Intensity scaling, as in :func:`focus_score`.

    Returns
    -------
    score : float

    Examples
    --------
    >>> import numpy as np
    >>> flat = np.full((40, 40), 100, dtype=np.uint16)
    >>> local_focus_score(flat, window=20)
    0.0
    """
    return _local_focus_score(_Plane(image, mask, scale), window)


def _local_focus_score(plane: _Plane, window: int) -> float:
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be a positive number of pixels; got {window}.")
    rows, cols = plane.raw.shape
    row_starts, row_index = _tile_edges(rows, window)
    col_starts, col_index = _tile_edges(cols, window)
    if plane.mask is None:
        x = plane.full()
        sums = np.add.reduceat(np.add.reduceat(x, col_starts, axis=1), row_starts, axis=0)
        counts = np.outer(np.diff(np.append(row_starts, rows)), np.diff(np.append(col_starts, cols)))
        counts = counts.astype(np.float64)
        m = plane.moments()
        largest = max(abs(m["min"]), abs(m["max"])) * float(counts.max())
        if plane.histogrammable and largest * largest < 2.0**53:
            # integer sums, and n*S2 - S1**2, are exact in float64 below 2**53
            squares = np.add.reduceat(
                np.add.reduceat(x * x, col_starts, axis=1), row_starts, axis=0
            )
            ssd = (counts * squares - sums * sums) / counts
        else:
            means = sums / counts
            spread = np.repeat(
                np.repeat(means, np.diff(np.append(col_starts, cols)), axis=1),
                np.diff(np.append(row_starts, rows)),
                axis=0,
            )
            deviation = x - spread
            ssd = np.add.reduceat(
                np.add.reduceat(deviation * deviation, col_starts, axis=1), row_starts, axis=0
            )
        sums, counts, ssd = sums.ravel(), counts.ravel(), ssd.ravel()
    else:
        n_cols = col_index.max() + 1
        labels = (row_index[:, None] * n_cols + col_index[None, :])[plane.mask]
        x = plane.pixels()
        n_tiles = (row_index.max() + 1) * n_cols
        counts = np.bincount(labels, minlength=n_tiles).astype(np.float64)
        sums = np.bincount(labels, weights=x, minlength=n_tiles)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        deviation = x - means[labels]
        ssd = np.bincount(labels, weights=deviation * deviation, minlength=n_tiles)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    keep = (counts > 0) & (means != 0) & ~np.isnan(means)
    if not keep.any():
        return 0.0
    # v_k = ssd_k / s^2 / (n_k * mean_k / s) = ssd_k / (n_k * mean_k * s)
    normalized = ssd[keep] / (counts[keep] * means[keep] * plane.s)
    median = float(np.median(normalized))
    if not (math.isfinite(median) and median > 0):
        return 0.0
    return float(np.var(normalized) / median)


def power_log_log_slope(image: Any, *, mask: Any = None, scale: str | float = "dtype") -> float:
    """CellProfiler's PowerLogLogSlope: slope of the radial power spectrum, log-log.

    As centrosome's ``rps`` and MeasureImageQuality compute it: the image is divided
    by ``median(|I - mean|)`` (when not constant), its mean removed, and the 2-D
    power spectrum ``|FFT|**2`` summed over rings of integer radius
    ``floor(sqrt(d))+1``, where ``d`` is the squared distance to the nearest corner
    measured as ``min(i, rows-1-i)**2 + min(j, cols-1-j)**2`` (centrosome's
    convention, kept). Rings 2 .. ``floor(min(rows, cols) / 8) - 1`` are kept; the
    slope of a least-squares line through ``(log radius, log power)`` over the rings
    with non-zero magnitude is returned. 0 for a constant image or one too small to
    have two rings. More negative means blurrier (power concentrated at low
    frequencies). Masked pixels are replaced by the mean of the measured ones.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, any real dtype.
    mask : (M, N) ndarray of bool, optional
        Pixels to keep (True).
    scale : {"dtype", "raw"} or float, optional
        Accepted for symmetry; the slope does not depend on intensity scaling.

    Returns
    -------
    slope : float

    Examples
    --------
    >>> import numpy as np
    >>> power_log_log_slope(np.ones((64, 64)))
    0.0
    """
    return _power_log_log_slope(_Plane(image, mask, scale))


def _power_log_log_slope(plane: _Plane) -> float:
    scipy_fft = _require_scipy_fft()
    rows, cols = plane.raw.shape
    if plane.mask is None:
        m = plane.moments()
        if m["max"] <= m["min"]:
            return 0.0
        mean = plane.mean()
        if plane.histogrammable:
            values, counts = plane.histogram()
            distance = np.abs(values - mean)
            order = np.argsort(distance, kind="stable")
            spread = _median_from_sorted(distance[order], counts[order], m["n"])
        else:
            spread = float(np.median(np.abs(plane.full() - mean)))
        x = plane.full()
    else:
        x = plane.raw.astype(np.float64)
        inside = x[plane.mask]
        x[~plane.mask] = inside.mean() if inside.size else 0.0
        if np.ptp(x) <= 0:
            return 0.0
        mean = float(np.mean(x))
        spread = float(np.median(np.abs(x - mean)))
    if not spread > 0:
        return 0.0  # CellProfiler divides by zero here and ends with a slope of 0
    last = int(np.floor(min(rows, cols) / 8.0)) - 1  # largest ring label kept
    if last < 2:
        return 0.0
    centred = (x - mean) * (1.0 / spread)
    # Only frequencies within `last` of a corner matter: rows and columns [0, last)
    # and [size - last, size). A real FFT along rows, then a complex FFT of the
    # first last+1 columns, gives them; the right-hand corners follow by symmetry.
    half = scipy_fft.rfft(centred, axis=1)[:, : last + 1]
    spectrum = scipy_fft.fft(half, axis=0)
    row_sel = np.concatenate([np.arange(last), np.arange(rows - last, rows)])
    left = spectrum[row_sel][:, :last]
    right = spectrum[(rows - row_sel) % rows][:, last:0:-1]  # columns cols-last .. cols-1
    block = np.abs(np.concatenate([left, right], axis=1))
    col_sel = np.concatenate([np.arange(last), np.arange(cols - last, cols)])
    di = np.minimum(row_sel, rows - 1 - row_sel)
    dj = np.minimum(col_sel, cols - 1 - col_sel)
    radius = np.floor(np.sqrt(di[:, None] ** 2 + dj[None, :] ** 2)).astype(int) + 1
    keep = radius <= last
    magnitude = np.bincount(radius[keep], weights=block[keep], minlength=last + 1)[2:]
    power = np.bincount(radius[keep], weights=block[keep] ** 2, minlength=last + 1)[2:]
    radii = np.arange(2, last + 1, dtype=np.float64)
    return _log_log_slope(radii, magnitude, power)


def _log_log_slope(radii: np.ndarray, magnitude: np.ndarray, power: np.ndarray) -> float:
    """MeasureImageQuality's fit: least squares of log(power) on log(radius)."""
    if not np.sum(magnitude) > 0:
        return 0.0
    valid = magnitude > 0
    radii, power = radii[valid], power[valid]
    if radii.shape[0] <= 1:
        return 0.0
    with np.errstate(divide="ignore"):
        log_power = np.log(power)
    finite = np.isfinite(log_power)
    x, y = np.log(radii)[finite], log_power[finite]
    if x.size < 2:
        return 0.0
    x_centred = x - x.mean()
    return float(np.dot(x_centred, y - y.mean()) / np.dot(x_centred, x_centred))


def _require_scipy_fft():
    from autotx_lib._optional import require

    return require("scipy.fft", "for the power-spectrum focus metric")


def laplacian_variance(image: Any, *, mask: Any = None, scale: str | float = "dtype") -> float:
    """Variance of the Laplacian (Pech-Pacheco et al. 2000), a classic focus measure.

    The 4-neighbour Laplacian ``I[i-1,j] + I[i+1,j] + I[i,j-1] + I[i,j+1] - 4 I[i,j]``
    is evaluated at interior pixels only (no border padding), and its population
    variance returned. Higher is sharper. With a mask, only interior pixels whose
    centre is in the mask count.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, at least 3 x 3.
    mask : (M, N) ndarray of bool, optional
    scale : {"dtype", "raw"} or float, optional
        Intensity scaling, as in :func:`focus_score`; the result scales with 1/scale**2.

    Returns
    -------
    variance : float

    Examples
    --------
    >>> import numpy as np
    >>> laplacian_variance(np.arange(25.0).reshape(5, 5))  # a ramp has no curvature
    0.0
    """
    return _laplacian_variance(_Plane(image, mask, scale))


def _interior_mask(plane: _Plane) -> np.ndarray | None:
    return None if plane.mask is None else plane.mask[1:-1, 1:-1]


def _laplacian_variance(plane: _Plane) -> float:
    x = plane.full()
    if min(x.shape) < 3:
        return 0.0
    lap = x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:] - 4.0 * x[1:-1, 1:-1]
    inner = _interior_mask(plane)
    if inner is not None:
        lap = lap[inner]
    if lap.size == 0:
        return 0.0
    return float(np.var(lap) / plane.s**2)


def tenengrad(image: Any, *, mask: Any = None, scale: str | float = "dtype") -> float:
    """Tenengrad (Krotkov 1987): mean squared Sobel gradient magnitude.

    ``mean(Gx**2 + Gy**2)`` with the 3 x 3 Sobel kernels, at interior pixels only
    (no threshold). Higher is sharper.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, at least 3 x 3.
    mask : (M, N) ndarray of bool, optional
    scale : {"dtype", "raw"} or float, optional
        Intensity scaling, as in :func:`focus_score`; the result scales with 1/scale**2.

    Returns
    -------
    tenengrad : float

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.tile(np.arange(5.0), (5, 1))  # slope 1 along columns
    >>> tenengrad(ramp)  # Sobel gives 8 * slope: 64
    64.0
    """
    return _tenengrad(_Plane(image, mask, scale))


def _tenengrad(plane: _Plane) -> float:
    x = plane.full()
    if min(x.shape) < 3:
        return 0.0
    # separable Sobel on the interior: smooth [1 2 1] across, difference [-1 0 1] along
    smooth_rows = x[:-2] + 2.0 * x[1:-1] + x[2:]  # (M-2, N)
    gx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    smooth_cols = x[:, :-2] + 2.0 * x[:, 1:-1] + x[:, 2:]  # (M, N-2)
    gy = smooth_cols[2:] - smooth_cols[:-2]
    energy = gx * gx + gy * gy
    inner = _interior_mask(plane)
    if inner is not None:
        energy = energy[inner]
    if energy.size == 0:
        return 0.0
    return float(np.mean(energy) / plane.s**2)


# --- intensity and saturation ---------------------------------------------------------


def intensity_statistics(
    image: Any, *, mask: Any = None, scale: str | float = "dtype"
) -> dict[str, float]:
    """CellProfiler's intensity measurements: mean, median, std, MAD, min, max, total.

    Over the N measured pixels: ``total = sum(I)``, ``mean = total / N``,
    ``std`` the population standard deviation, ``median`` numpy's median (the mean of
    the two middle values for even N), ``mad = median(|I - median|)`` (not scaled by
    1.4826), ``min`` and ``max``. All zero for an empty mask, as in CellProfiler.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, any real dtype.
    mask : (M, N) ndarray of bool, optional
    scale : {"dtype", "raw"} or float, optional
        Intensity scaling, as in :func:`focus_score`.

    Returns
    -------
    statistics : dict of str to float
        Keys ``mean_intensity``, ``median_intensity``, ``std_intensity``,
        ``mad_intensity``, ``min_intensity``, ``max_intensity``, ``total_intensity``.

    Examples
    --------
    >>> import numpy as np
    >>> stats = intensity_statistics(np.array([[1, 2], [3, 10]], dtype=np.uint8), scale="raw")
    >>> stats["median_intensity"], stats["mad_intensity"], stats["total_intensity"]
    (2.5, 1.0, 16.0)
    """
    return _intensity_statistics(_Plane(image, mask, scale))


def _intensity_statistics(plane: _Plane) -> dict[str, float]:
    m = plane.moments()
    if m["n"] == 0:
        return dict.fromkeys(INTENSITY_METRICS, 0.0)
    s, n = plane.s, m["n"]
    return {
        "mean_intensity": float(plane.mean() / s),
        "median_intensity": float(m["median"] / s),
        "std_intensity": float(math.sqrt(max(m["ssd"], 0.0) / n) / s),
        "mad_intensity": float(m["mad"] / s),
        "min_intensity": float(m["min"] / s),
        "max_intensity": float(m["max"] / s),
        "total_intensity": float(m["sum"] / s),
    }


def _dtype_ceiling(dtype: np.dtype) -> float:
    if dtype.kind == "b":
        return 1.0
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).max)
    return math.nan


def saturation_statistics(
    image: Any, *, mask: Any = None, ceiling: float | None = None
) -> dict[str, float]:
    """Percent of pixels at the image's maximum, at its minimum, and at the ceiling.

    ``percent_maximal`` and ``percent_minimal`` are CellProfiler's PercentMaximal and
    PercentMinimal: ``100 * count(I == max(I)) / N`` (and the same for the minimum),
    where max and min are the image's own extremes. ``percent_saturated`` is
    ``100 * count(I >= ceiling) / N`` with the ceiling the dtype's largest value
    (65535 for uint16), so it tells a camera at full scale apart from an image whose
    brightest pixel is merely unique. All are 0 for an empty mask.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, any real dtype.
    mask : (M, N) ndarray of bool, optional
    ceiling : float, optional
        The full-scale value in stored units, e.g. 4095 for a 12-bit camera. Default:
        the dtype's maximum; floating-point images have none, so the percentage is NaN
        unless a ceiling is given.

    Returns
    -------
    statistics : dict of str to float
        ``percent_maximal``, ``percent_minimal``, ``percent_saturated``, in percent.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((10, 10), dtype=np.uint8)
    >>> image[:2] = 255
    >>> saturation_statistics(image)
    {'percent_maximal': 20.0, 'percent_minimal': 80.0, 'percent_saturated': 20.0}
    """
    return _saturation_statistics(_Plane(image, mask, "raw"), ceiling)


def _saturation_statistics(plane: _Plane, ceiling: float | None) -> dict[str, float]:
    m = plane.moments()
    n = m["n"]
    if n == 0:
        return dict.fromkeys(SATURATION_METRICS, 0.0)
    limit = _dtype_ceiling(plane.raw.dtype) if ceiling is None else float(ceiling)
    if math.isnan(limit):
        saturated = math.nan
    elif plane.histogrammable:
        values, counts = plane.histogram()
        saturated = 100.0 * float(counts[values >= limit].sum()) / n
    else:
        saturated = 100.0 * float(np.count_nonzero(plane.pixels() >= limit)) / n
    return {
        "percent_maximal": 100.0 * float(m["count_max"]) / float(n),
        "percent_minimal": 100.0 * float(m["count_min"]) / float(n),
        "percent_saturated": saturated,
    }


def percent_maximal(image: Any, *, mask: Any = None) -> float:
    """CellProfiler's PercentMaximal: percent of pixels equal to the image's maximum.

    See :func:`saturation_statistics`.

    Examples
    --------
    >>> import numpy as np
    >>> percent_maximal(np.array([[0, 7], [7, 7]], dtype=np.uint8))
    75.0
    """
    return saturation_statistics(image, mask=mask)["percent_maximal"]


def percent_minimal(image: Any, *, mask: Any = None) -> float:
    """CellProfiler's PercentMinimal: percent of pixels equal to the image's minimum.

    See :func:`saturation_statistics`.

    Examples
    --------
    >>> import numpy as np
    >>> percent_minimal(np.array([[0, 7], [7, 7]], dtype=np.uint8))
    25.0
    """
    return saturation_statistics(image, mask=mask)["percent_minimal"]


def percent_saturated(image: Any, *, mask: Any = None, ceiling: float | None = None) -> float:
    """Percent of pixels at or above the full-scale value (the dtype's maximum by default).

    See :func:`saturation_statistics`.

    Examples
    --------
    >>> import numpy as np
    >>> percent_saturated(np.array([[0, 4095], [4095, 4095]], dtype=np.uint16), ceiling=4095)
    75.0
    """
    return saturation_statistics(image, mask=mask, ceiling=ceiling)["percent_saturated"]


# --- all at once -----------------------------------------------------------------------


def _resolve_metrics(metrics: str | Iterable[str] | None) -> tuple[str, ...]:
    if metrics is None or metrics == "all":
        return ALL_METRICS
    if metrics == "cellprofiler":
        return CELLPROFILER_METRICS
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = tuple(dict.fromkeys(metrics))
    unknown = [name for name in chosen if name not in ALL_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}, "
            "or pass 'all' or 'cellprofiler'."
        )
    return chosen


def measure_image(
    image: Any,
    metrics: str | Iterable[str] | None = None,
    *,
    mask: Any = None,
    scale: str | float = "dtype",
    window: int = 20,
    ceiling: float | None = None,
) -> dict[str, float]:
    """Compute several metrics of one plane, sharing the work between them.

    Parameters
    ----------
    image : (M, N) ndarray
        One plane, any real dtype.
    metrics : str or iterable of str, optional
        Names from :data:`ALL_METRICS`, or ``"all"`` (default) or ``"cellprofiler"``
        (:data:`CELLPROFILER_METRICS`).
    mask : (M, N) ndarray of bool, optional
        Pixels to measure.
    scale : {"dtype", "raw"} or float, optional
        Intensity scaling, as in :func:`focus_score`.
    window : int, optional
        Tile size of :func:`local_focus_score`.
    ceiling : float, optional
        Full-scale value for ``percent_saturated``.

    Returns
    -------
    values : dict of str to float
        One entry per requested metric, in the order asked.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    >>> sorted(measure_image(image, ["mean_intensity", "percent_maximal"], scale="raw").items())
    [('mean_intensity', 31.5), ('percent_maximal', 1.5625)]
    """
    names = _resolve_metrics(metrics)
    plane = _Plane(image, mask, scale)
    result: dict[str, float] = {}
    wanted = set(names)
    if wanted & set(INTENSITY_METRICS):
        result.update(_intensity_statistics(plane))
    if wanted & set(SATURATION_METRICS):
        result.update(_saturation_statistics(plane, ceiling))
    if "focus_score" in wanted:
        result["focus_score"] = _focus_score(plane)
    if "local_focus_score" in wanted:
        result["local_focus_score"] = _local_focus_score(plane, window)
    if "power_log_log_slope" in wanted:
        result["power_log_log_slope"] = _power_log_log_slope(plane)
    if "laplacian_variance" in wanted:
        result["laplacian_variance"] = _laplacian_variance(plane)
    if "tenengrad" in wanted:
        result["tenengrad"] = _tenengrad(plane)
    return {name: float(result[name]) for name in names}


def measure_images(
    images: Iterable[Any] | np.ndarray,
    metrics: str | Iterable[str] | None = None,
    *,
    names: Sequence[str] | None = None,
    **options: Any,
):
    """Measure many planes: the batch form of :func:`measure_image`.

    Parameters
    ----------
    images : (K, M, N) ndarray or iterable of (M, N) ndarrays
        The planes.
    metrics : str or iterable of str, optional
        As in :func:`measure_image`.
    names : sequence of str, optional
        One label per plane, used as the index; 0..K-1 by default.
    **options
        ``mask``, ``scale``, ``window``, ``ceiling``, passed to :func:`measure_image`.

    Returns
    -------
    table : pandas.DataFrame
        One row per plane, one float64 column per metric.

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.zeros((3, 8, 8), dtype=np.uint8)
    >>> stack[1] = 255
    >>> measure_images(stack, ["percent_saturated"])["percent_saturated"].tolist()
    [0.0, 100.0, 0.0]
    """
    import pandas as pd

    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise ValueError(
            "measure_images() takes a stack (K, rows, columns) or a list of planes; got one "
            "2-D plane. Use measure_image() for a single plane."
        )
    rows = [measure_image(image, metrics, **options) for image in images]
    columns = list(_resolve_metrics(metrics))
    index = list(names) if names is not None else None
    if index is not None and len(index) != len(rows):
        raise ValueError(f"names has {len(index)} labels for {len(rows)} images.")
    return pd.DataFrame(rows, columns=columns, index=index, dtype=np.float64)
