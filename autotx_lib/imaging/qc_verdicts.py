"""Plate QC verdicts: one word per image (and well) a biologist reads at once.

:func:`decide_verdicts` is a pure function over the per-image metric table that
:func:`autotx_lib.imaging.plate.plate_qc` returns (one row per image plane, the
CellProfiler-faithful metrics of :mod:`autotx_lib.imaging.qc` as columns). Each rule
fits its metric, instead of one symmetric z-score for all:

==============  ==========================================================================
verdict         rule (per plate and channel; thresholds in :data:`DEFAULT_THRESHOLDS`)
==============  ==========================================================================
unreadable      the image could not be read or measured (``error`` is set)
empty           no signal above the camera offset: the image is constant, or it is
                camera noise only - its power spectrum does not fall with frequency
                (``power_log_log_slope`` >= ``empty``, 0; white noise gives about +1,
                images of cells or background below -0.4), no pixel lies 10 standard
                deviations above its median, and its signal is below the ``dark`` fold.
                An absolute floor: when the whole plate is noise, noise alone decides.
saturated       at least ``saturated`` percent (0.5) of the pixels sit at the dtype's (or
                the acquisition's) maximum (``percent_saturated``), or at the image's own
                maximum (``percent_maximal``, for a 12-bit camera stored in 16 bits) -
                never a constant or empty image. An absolute floor too.
out of focus    ``power_log_log_slope`` (brightness-independent) lies more than
                ``out_of_focus`` (0.7) below the plate's in-focus images: the median slope
                of the images that pass every other rule, taken again without the images
                this rule flags.
dark / bright   the signal, ``mean_intensity`` minus the camera offset (the median of the
                images' ``min_intensity``), is below ``dark`` (0.25) or above ``bright``
                (4) times the reference: the median signal of the plate's (or the control
                wells') images that are neither empty nor saturated. A fold change, so the
                same threshold fits every channel and exposure.
==============  ==========================================================================

An image may meet several rules; ``verdict`` is the first in the order above,
``flags`` lists them all, and ``reason`` says in words which metric and threshold
decided. A rule whose metric the table lacks decides nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "OK",
    "VERDICTS",
    "VERDICT_COLOURS",
    "DEFAULT_THRESHOLDS",
    "THRESHOLD_HELP",
    "resolve_thresholds",
    "parse_threshold_options",
    "parse_controls",
    "decide_verdicts",
    "well_verdicts",
    "unreadable_plate_message",
]

OK = "ok"
#: Every verdict but "ok", most important first (an image gets the first that applies).
VERDICTS: tuple[str, ...] = ("unreadable", "empty", "saturated", "out of focus", "dark", "bright")
#: One colour per verdict, for plate maps (colour-blind safe where it matters: ok is grey-green).
VERDICT_COLOURS: dict[str, str] = {
    OK: "#b8d8b8",
    "unreadable": "#7f7f7f",
    "empty": "#222222",
    "saturated": "#e377c2",
    "out of focus": "#ff7f0e",
    "dark": "#1f4e9c",
    "bright": "#f2d024",
}

#: Noise alone stays within this many standard deviations of its median (about 5 for
#: millions of Gaussian pixels, 8 for low-count Poisson ones); an image of objects does not.
NOISE_PEAK = 10.0

#: Default thresholds. Units: ``empty`` a PowerLogLogSlope; ``saturated`` percent of
#: pixels; ``out_of_focus`` a drop in PowerLogLogSlope; ``dark``/``bright`` folds of the
#: reference signal.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "empty": 0.0,
    "saturated": 0.5,
    "out_of_focus": 0.7,
    "dark": 0.25,
    "bright": 4.0,
}

#: What each threshold means, for help texts, sliders and report legends.
THRESHOLD_HELP: dict[str, str] = {
    "empty": "PowerLogLogSlope at or above which an image is camera noise only (0)",
    "saturated": "percent of pixels at the maximum that makes an image saturated (0.5)",
    "out_of_focus": "drop of PowerLogLogSlope below the plate's in-focus images (0.7)",
    "dark": "signal below this fold of the plate's (or controls') signal (0.25)",
    "bright": "signal above this fold of the plate's (or controls') signal (4)",
}


def _threshold_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def resolve_thresholds(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The defaults updated with ``overrides`` (keys as in :data:`DEFAULT_THRESHOLDS`).

    Names may use dashes or spaces (``"out-of-focus"``, ``"out of focus"``).

    Raises
    ------
    ValueError
        An unknown name, or a value that is not a number (or a fold that is not positive).

    Examples
    --------
    >>> resolve_thresholds({"out-of-focus": 1})["out_of_focus"]
    1.0
    """
    limits = dict(DEFAULT_THRESHOLDS)
    for name, value in (overrides or {}).items():
        key = _threshold_key(name)
        if key not in limits:
            raise ValueError(
                f"unknown threshold {name!r}; known: "
                f"{', '.join(k.replace('_', '-') for k in DEFAULT_THRESHOLDS)}."
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"threshold {name!r} must be a number; got {value!r}.") from None
        if math.isnan(number) or (key in ("dark", "bright") and number <= 0):
            raise ValueError(f"threshold {name!r} must be a positive number; got {value!r}.")
        limits[key] = number
    return limits


def parse_threshold_options(items: Iterable[str]) -> dict[str, float]:
    """Parse ``NAME=VALUE`` strings (the CLI's ``--threshold``) into a threshold dict.

    Examples
    --------
    >>> parse_threshold_options(["out-of-focus=0.5", "dark=0.2"])
    {'out_of_focus': 0.5, 'dark': 0.2}
    """
    result: dict[str, float] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise ValueError(
                f"--threshold {item!r} is not NAME=VALUE, e.g. out-of-focus=0.7 or dark=0.25."
            )
        result[_threshold_key(name)] = value.strip()  # type: ignore[assignment]
    return {k: v for k, v in resolve_thresholds(result).items() if k in result}


def parse_controls(controls: str | Iterable[str] | None) -> set[tuple[int, int]] | None:
    """Control wells as 0-based (row, column) pairs; ``None`` when none are given.

    Each item is a well (``A01``), a column number (``1``: all of column 1) or a row
    letter (``H``: all of row H), evaluated on a 1536-well grid; a comma-separated string
    works too.

    Examples
    --------
    >>> sorted(parse_controls("A01, 12"))[:2]
    [(0, 0), (0, 11)]
    """
    from autotx_lib.imaging.plate import parse_well

    if controls is None:
        return None
    items = controls.split(",") if isinstance(controls, str) else list(controls)
    wells: set[tuple[int, int]] = set()
    for raw in items:
        text = str(raw).strip()
        if not text:
            continue
        if text.isdigit():
            wells.update((r, int(text) - 1) for r in range(32))
        elif text.isalpha() and len(text) <= 2:
            row = parse_well(f"{text}1")[0]
            wells.update((row, c) for c in range(48))
        else:
            wells.add(parse_well(text))
    return wells or None


def _column(table, name: str) -> np.ndarray | None:
    if name not in table.columns:
        return None
    return table[name].to_numpy(dtype=np.float64, na_value=np.nan)


def _median(values: np.ndarray, where: np.ndarray) -> float:
    chosen = values[where & np.isfinite(values)]
    return float(np.median(chosen)) if chosen.size else math.nan


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _noise_only(part, readable: np.ndarray, limits: dict[str, float]) -> np.ndarray:
    """Images whose spectrum is flat and whose brightest pixel is within noise of the median."""
    slope = _column(part, "power_log_log_slope")
    if slope is None:
        return np.zeros(len(part), dtype=bool)
    with np.errstate(invalid="ignore"):
        flat = readable & (slope >= limits["empty"])
    high, median = _column(part, "max_intensity"), _column(part, "median_intensity")
    spread = _column(part, "std_intensity")
    if high is not None and median is not None and spread is not None:
        # sparse bright objects on a noisy background can have a flat spectrum too;
        # noise alone never reaches far above its median
        with np.errstate(invalid="ignore"):
            flat &= (high - median) < NOISE_PEAK * spread
    return flat


def _saturated(part, readable: np.ndarray, blank: np.ndarray, limits: dict[str, float],
               reasons: list[str]) -> np.ndarray:
    n = len(part)
    at_ceiling, at_max = _column(part, "percent_saturated"), _column(part, "percent_maximal")
    by_ceiling = np.zeros(n, dtype=bool)
    by_max = np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        if at_ceiling is not None:
            by_ceiling = readable & (at_ceiling >= limits["saturated"])
        if at_max is not None:  # the image's own maximum: never a constant or blank image
            by_max = readable & ~blank & (at_max >= limits["saturated"])
    for i in np.flatnonzero(by_ceiling | by_max):
        percent, where = ((at_ceiling[i], "the dtype's maximum") if by_ceiling[i]
                          else (at_max[i], "the image's maximum"))
        reasons[i] = (f"{percent:.2f}% of pixels at {where} (PercentMaximal); threshold "
                      f"{_fmt(limits['saturated'])}%")
    return by_ceiling | by_max


def _in_controls(part, controls) -> np.ndarray:
    return np.array(
        [(int(r), int(c)) in controls for r, c in zip(part["row"], part["column"], strict=True)],
        dtype=bool,
    )


def _decide_group(part, limits: dict[str, float], controls) -> dict[str, Any]:
    """Rules for one plate and channel; returns per-image hits, reasons and references."""
    n = len(part)
    errors = part["error"].fillna("").astype(str).to_numpy() if "error" in part else np.full(n, "")
    readable = errors == ""
    hits = {name: np.zeros(n, dtype=bool) for name in VERDICTS}
    reasons: dict[str, list[str]] = {name: [""] * n for name in VERDICTS}
    hits["unreadable"], reasons["unreadable"] = ~readable, list(errors)
    slope, mean = _column(part, "power_log_log_slope"), _column(part, "mean_intensity")
    low, high = _column(part, "min_intensity"), _column(part, "max_intensity")

    constant = np.zeros(n, dtype=bool)
    if low is not None and high is not None:
        constant = readable & (low == high)
    noise = _noise_only(part, readable, limits) & ~constant
    hits["saturated"] = _saturated(part, readable, constant | noise, limits, reasons["saturated"])

    # the intensity reference: images that are neither blank nor saturated (or the controls)
    pool = readable & ~constant & ~noise & ~hits["saturated"]
    if controls is not None and (pool & _in_controls(part, controls)).any():
        pool &= _in_controls(part, controls)
    references: dict[str, Any] = {}
    fold = np.full(n, np.nan)
    if mean is not None:
        offset = _median(low, readable) if low is not None else 0.0
        offset = 0.0 if math.isnan(offset) else offset
        reference = _median(mean - offset, pool)
        if reference > 0:
            fold = np.maximum(mean - offset, 0.0) / reference
        references |= {"camera_offset": offset, "signal_reference": reference}

    # empty: constant, or noise only and no more signal than a dark image (an absolute
    # floor: with no reference, because the whole plate is noise, noise alone decides)
    with np.errstate(invalid="ignore"):
        hits["empty"] = constant | (noise & ~(fold >= limits["dark"]))
    for i in np.flatnonzero(hits["empty"]):
        reasons["empty"][i] = (
            f"constant image (every pixel {_fmt(low[i])}): no signal above the camera offset"
            if constant[i] else
            f"no signal above the camera offset: PowerLogLogSlope {slope[i]:.2f} >= "
            f"{_fmt(limits['empty'])} (a flat spectrum) and no pixel {NOISE_PEAK:g} standard "
            "deviations above the median: camera noise only"
        )
    usable = readable & ~hits["empty"]

    if slope is not None:
        focus_pool = usable & ~hits["saturated"]
        first = _median(slope, focus_pool)
        reference = _median(slope, focus_pool & ~(slope < first - limits["out_of_focus"]))
        references["focus_reference"] = reference  # the median of the in-focus images
        with np.errstate(invalid="ignore"):
            hits["out of focus"] = usable & (slope < reference - limits["out_of_focus"])
        for i in np.flatnonzero(hits["out of focus"]):
            reasons["out of focus"][i] = (
                f"PowerLogLogSlope {slope[i]:.2f} is {reference - slope[i]:.2f} below the "
                f"plate's in-focus images ({reference:.2f}); threshold "
                f"{_fmt(limits['out_of_focus'])}"
            )
    if mean is not None:
        with np.errstate(invalid="ignore"):
            hits["dark"] = usable & (fold < limits["dark"])
            hits["bright"] = usable & (fold > limits["bright"])
        who = "the control wells'" if controls is not None else "the plate's"
        for name in ("dark", "bright"):
            for i in np.flatnonzero(hits[name]):
                reasons[name][i] = (
                    f"signal {fold[i]:.2f}x {who}: MeanIntensity {_fmt(mean[i])} minus the "
                    f"camera offset {_fmt(references['camera_offset'])}, against "
                    f"{_fmt(references['signal_reference'])}; threshold {_fmt(limits[name])}x"
                )
    return {"hits": hits, "reasons": reasons, "references": references, "fold": fold}


def decide_verdicts(
    table,
    *,
    thresholds: Mapping[str, float] | None = None,
    controls: str | Iterable[str] | None = None,
    by: Sequence[str] = ("plate", "channel"),
):
    """Give every image a verdict: ok, empty, dark, bright, out of focus, saturated, unreadable.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per image plane with metric columns (as :func:`plate_qc` returns);
        ``error`` marks unreadable images, ``row``/``column`` (0-based) place them.
    thresholds : mapping, optional
        Overrides of :data:`DEFAULT_THRESHOLDS` (see :func:`resolve_thresholds`).
    controls : str or iterable of str, optional
        Control wells for the intensity reference (see :func:`parse_controls`); default
        every image of the plate. Focus is always judged against the plate.
    by : sequence of str, optional
        Columns that define a group judged on its own (missing columns are ignored).

    Returns
    -------
    table : pandas.DataFrame
        A copy with ``verdict`` (the first that applies, or "ok"), ``flags`` (every
        verdict that applies, comma-separated; "" when ok), ``flagged`` (bool),
        ``reason`` (the metric, its value and the threshold that decided),
        ``signal_fold`` (signal over the reference) and ``focus_drop`` (reference
        PowerLogLogSlope minus the image's). ``attrs["thresholds"]`` holds the thresholds
        used and ``attrs["references"]`` the per-group references (camera offset,
        reference signal, in-focus slope).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"plate": "P", "channel": "DAPI", "row": 0, "column": range(4),
    ...                       "error": "", "mean_intensity": [100., 110., 90., 8.],
    ...                       "min_intensity": 0., "power_log_log_slope": [-1.5, -1.6, -1.5, -1.5]})
    >>> decide_verdicts(table)["verdict"].tolist()
    ['ok', 'ok', 'ok', 'dark']
    """
    limits = resolve_thresholds(thresholds)
    wells = parse_controls(controls)
    result = table.copy()
    n = len(result)
    verdict = np.full(n, OK, dtype=object)
    flags = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    fold = np.full(n, np.nan)
    drop = np.full(n, np.nan)
    references = []
    groups = [column for column in by if column in result.columns]
    positions = (
        result.groupby(groups, sort=False, dropna=False).indices if groups
        else {(): np.arange(n)}
    )
    for key, index in positions.items():
        part = result.iloc[index]
        decided = _decide_group(part, limits, wells)
        for j, i in enumerate(index):
            applies = [name for name in VERDICTS if decided["hits"][name][j]]
            if applies:
                verdict[i] = applies[0]
                flags[i] = ",".join(applies)
                reason[i] = decided["reasons"][applies[0]][j]
        refs = decided["references"]
        fold[index] = decided["fold"]
        if "focus_reference" in refs and "power_log_log_slope" in part:
            drop[index] = refs["focus_reference"] - part["power_log_log_slope"].to_numpy(
                dtype=np.float64, na_value=np.nan)
        labels = key if isinstance(key, tuple) else (key,)
        references.append(dict(zip(groups, labels, strict=True)) | refs)
    result["verdict"] = verdict
    result["flags"] = flags
    result["flagged"] = result["verdict"] != OK
    result["reason"] = reason
    result["signal_fold"] = fold
    result["focus_drop"] = drop
    result.attrs = dict(table.attrs) | {"thresholds": limits, "references": references}
    return result


def well_verdicts(table, *, by: Sequence[str] = ("plate", "well", "row", "column", "channel")):
    """One verdict per well and channel: the most important among its images.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`decide_verdicts`.

    Returns
    -------
    wells : pandas.DataFrame
        The ``by`` columns, ``verdict``, ``flags`` (union over the images), ``reason``
        (of the image that decided), ``n_images`` and ``n_flagged``.
    """
    import pandas as pd

    keys = [k for k in by if k in table.columns]
    rank = {name: i for i, name in enumerate(VERDICTS)} | {OK: len(VERDICTS)}
    ordered = table.assign(_rank=table["verdict"].map(rank)).sort_values(
        keys + ["_rank"], kind="stable")
    result = ordered.drop_duplicates(keys)[keys + ["verdict", "reason"]].set_index(keys)
    grouped = table.groupby(keys, sort=True, dropna=False)
    flags = table["flags"].astype(str)
    present = pd.DataFrame({
        name: flags.str.contains(rf"(?:^|,){re.escape(name)}(?:,|$)")
        .groupby([table[k] for k in keys], sort=True, dropna=False).any()
        for name in VERDICTS
    }).reindex(result.index, fill_value=False)
    union = [",".join(name for name, hit in zip(VERDICTS, hits, strict=True) if hit)
             for hits in present.itertuples(index=False, name=None)]
    result["flags"] = union
    result["n_images"] = grouped.size()
    result["n_flagged"] = grouped["flagged"].sum().astype(int)
    result = result.reset_index()[keys + ["verdict", "flags", "reason", "n_images",
                                          "n_flagged"]]
    result.attrs = dict(table.attrs)
    return result


def unreadable_plate_message(table) -> str | None:
    """One sentence when no image of the table could be read; ``None`` otherwise.

    It names the plate, counts the images and gives the commonest error and one path, so
    a plate of 96 missing files is one clear message, not 96 rows.
    """
    if len(table) == 0 or "error" not in table.columns:
        return None
    errors = table["error"].fillna("").astype(str)
    if (errors == "").any():
        return None
    kinds = errors.str.split(":", n=1).str[0].value_counts()
    first = table.iloc[0]
    plate = table.attrs.get("plate") or (first["plate"] if "plate" in table else "the plate")
    return (
        f"none of the {len(table)} images of plate {plate} could be read "
        f"({', '.join(f'{count} {kind}' for kind, count in kinds.items())}); the first: "
        f"{errors.iloc[0]}. Check that the image files are complete and readable "
        "(a plate copied without its images lists them all as missing)."
    )
