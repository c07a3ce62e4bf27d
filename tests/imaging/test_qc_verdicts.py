"""Plate QC verdicts: the rules per metric, on small metric tables and on measured planes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi

from autotx_lib.imaging import qc_verdicts as V
from autotx_lib.imaging.qc import measure_image


def _nuclei(seed: int, shape=(128, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spots = np.zeros(shape)
    spots[tuple(rng.integers(0, shape[0], (2, 60)))] = 1
    image = 300 + 3000 * ndi.gaussian_filter(spots, 2.5) / 0.025 + rng.normal(0, 8, shape)
    return image.clip(0, 65535).astype(np.uint16)


def _table(planes: dict[str, np.ndarray], channel: str = "DAPI") -> pd.DataFrame:
    """One row per plane (named by well) with every metric, as plate_qc builds it."""
    from autotx_lib.imaging.plate import parse_well

    rows = []
    for well, plane in planes.items():
        row, column = parse_well(well)
        rows.append({"plate": "P", "well": well, "row": row, "column": column,
                     "channel": channel, "error": ""} | measure_image(plane))
    return pd.DataFrame(rows)


def _verdicts(table, **options) -> dict[str, str]:
    decided = V.decide_verdicts(table, **options)
    return dict(zip(decided["well"], decided["verdict"], strict=True))


def test_a_constant_image_is_empty_never_saturated_nor_the_sharpest():
    planes = {f"A{c:02d}": _nuclei(c) for c in range(1, 9)}
    planes["B01"] = np.full((128, 128), 300, dtype=np.uint16)  # percent_maximal = 100%
    table = _table(planes)
    assert table.loc[8, "percent_maximal"] == 100.0
    decided = V.decide_verdicts(table)
    blank = decided.iloc[8]
    assert blank["verdict"] == "empty" and blank["flags"] == "empty"
    assert "constant image" in blank["reason"]
    assert (decided["verdict"].iloc[:8] == "ok").all()


def test_camera_noise_is_empty_and_a_dim_real_image_is_dark():
    rng = np.random.default_rng(5)
    planes = {f"A{c:02d}": _nuclei(c) for c in range(1, 9)}
    planes["B01"] = (300 + rng.normal(0, 3, (128, 128))).astype(np.uint16)
    planes["B02"] = (_nuclei(20) * 0.1).astype(np.uint16)
    planes["B03"] = (300 + (_nuclei(21).astype(float) - 300) * 0.1).astype(np.uint16)
    got = _verdicts(_table(planes))
    assert got["B01"] == "empty"
    assert got["B02"] == got["B03"] == "dark"  # offset scaled too, or offset kept
    assert {got[w] for w in planes if w.startswith("A")} == {"ok"}


def test_blur_is_out_of_focus_whatever_the_brightness():
    planes = {f"A{c:02d}": _nuclei(c) for c in range(1, 9)}
    planes["B01"] = ndi.gaussian_filter(_nuclei(30).astype(float), 4).astype(np.uint16)
    planes["B02"] = (300 + (_nuclei(31).astype(float) - 300) * 2).astype(np.uint16)  # brighter
    decided = V.decide_verdicts(_table(planes))
    got = dict(zip(decided["well"], decided["verdict"], strict=True))
    assert got["B01"] == "out of focus" and got["B02"] == "ok"
    blurred = decided[decided["well"] == "B01"].iloc[0]
    assert blurred["focus_drop"] > 0.7 and "PowerLogLogSlope" in blurred["reason"]
    assert "threshold 0.7" in blurred["reason"]


def test_saturation_needs_a_real_fraction_at_the_maximum():
    planes = {f"A{c:02d}": _nuclei(c) for c in range(1, 9)}
    few = _nuclei(40)
    few[0, :5] = 65535  # 5 pixels: 0.03%
    many = _nuclei(41)
    many[:8] = 65535  # 6.25%
    twelve_bit = _nuclei(42).clip(0, 4095)  # a 12-bit camera stored in 16 bits
    twelve_bit[:4] = 4095
    planes |= {"B01": few, "B02": many, "B03": twelve_bit}
    decided = V.decide_verdicts(_table(planes))
    got = dict(zip(decided["well"], decided["verdict"], strict=True))
    assert got["B01"] == "ok" and got["B02"] == "saturated" and got["B03"] == "saturated"
    reasons = dict(zip(decided["well"], decided["reason"], strict=True))
    assert "dtype's maximum" in reasons["B02"] and "image's maximum" in reasons["B03"]


def test_a_plate_of_noise_is_all_empty():
    rng = np.random.default_rng(3)
    planes = {f"A{c:02d}": (300 + rng.normal(0, 3, (96, 96))).astype(np.uint16)
              for c in range(1, 7)}
    assert set(_verdicts(_table(planes)).values()) == {"empty"}


def test_unreadable_rows_and_missing_metrics():
    table = pd.DataFrame({
        "plate": "P", "channel": "w1", "well": ["A01", "A02", "A03"], "row": 0,
        "column": [0, 1, 2], "error": ["", "", "FileNotFoundError: x is missing"],
        "focus_score": [1.0, 2.0, np.nan],
    })
    decided = V.decide_verdicts(table)  # no rule has its metric: only unreadable decides
    assert decided["verdict"].tolist() == ["ok", "ok", "unreadable"]
    assert decided["reason"].iloc[2] == "FileNotFoundError: x is missing"
    assert V.unreadable_plate_message(decided) is None
    message = V.unreadable_plate_message(decided.iloc[2:])
    assert message.startswith("none of the 1 images of plate P could be read")
    assert "1 FileNotFoundError" in message and "x is missing" in message


def test_thresholds_parse_from_names_with_dashes_and_say_what_is_known():
    assert V.parse_threshold_options(["out-of-focus=0.5", "dark = 0.1"]) == {
        "out_of_focus": 0.5, "dark": 0.1}
    assert V.resolve_thresholds({"out of focus": 1})["out_of_focus"] == 1.0
    with pytest.raises(ValueError, match="known: empty, saturated, out-of-focus, dark, bright"):
        V.resolve_thresholds({"blur": 1})
    with pytest.raises(ValueError, match="NAME=VALUE"):
        V.parse_threshold_options(["dark"])
    with pytest.raises(ValueError, match="must be a number"):
        V.parse_threshold_options(["dark=low"])
    with pytest.raises(ValueError, match="positive"):
        V.resolve_thresholds({"bright": 0})


def test_controls_parse_wells_columns_and_rows():
    assert V.parse_controls(None) is None
    assert V.parse_controls("A01") == {(0, 0)}
    column = V.parse_controls("12")
    assert (7, 11) in column and (0, 0) not in column
    row = V.parse_controls(["H"])
    assert (7, 0) in row and (7, 11) in row and (6, 0) not in row
    with pytest.raises(ValueError, match="A01"):
        V.parse_controls("A-1")


def test_well_verdict_is_the_most_important_of_its_images():
    table = pd.DataFrame({
        "plate": "P", "well": ["A01"] * 3 + ["A02"], "row": 0, "column": [0, 0, 0, 1],
        "channel": "w1", "verdict": ["ok", "dark", "out of focus", "ok"],
        "flags": ["", "dark", "out of focus,dark", ""], "reason": ["", "d", "f", ""],
        "flagged": [False, True, True, False],
    })
    wells = V.well_verdicts(table).set_index("well")
    assert wells.loc["A01", "verdict"] == "out of focus" and wells.loc["A01", "reason"] == "f"
    assert wells.loc["A01", "flags"] == "out of focus,dark" and wells.loc["A01", "n_flagged"] == 2
    assert wells.loc["A02", "verdict"] == "ok"


def test_the_agent_config_has_a_qc_section():
    from autotx_lib.config import config_from_dict
    from autotx_lib.errors import ConfigError

    base = {"incoming": "/in", "managed": "/m", "destination": "/d"}
    config = config_from_dict(base | {"qc": {"thresholds": {"out-of-focus": 0.9},
                                             "controls": ["12"]}})
    assert config.qc.thresholds == {"out_of_focus": 0.9} and config.qc.controls == ["12"]
    assert config_from_dict(base).qc.thresholds == {}
    with pytest.raises(ConfigError, match="qc.controls"):
        config_from_dict(base | {"qc": {"controls": ["A-1"]}})
