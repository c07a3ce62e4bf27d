"""PlateQCDashboard on a real ImageXpress export: progress, pickers, heatmap clicks, flags."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets", reason="the dashboards need ipywidgets (the viz extra)")
pytest.importorskip("jupyter_bokeh", reason="the dashboards need jupyter_bokeh (the viz extra)")

from autotx_lib.dashboards import PlateQCDashboard  # noqa: E402
from autotx_lib.imaging.plate import PlateNotFoundError, plate_qc  # noqa: E402


@pytest.fixture(scope="module")
def board(sampledata):
    # a strict blur threshold, so that this healthy plate has flagged images to list
    return PlateQCDashboard(sampledata / "hcs" / "ImageXpress_9987_Plate_3435", run=True,
                            thresholds={"blur": 0.5}, n_workers=2)


def test_progress_reaches_every_image_and_the_table_matches_the_library(board, sampledata):
    assert board.progress.value == board.progress.max == len(board.plate.records) == 8
    assert "8 images measured, 4 flagged, 0 unreadable" in board.progress_label.value
    direct = plate_qc(sampledata / "hcs" / "ImageXpress_9987_Plate_3435",
                      thresholds={"blur": 0.5}, n_workers=2)
    assert list(board.table["flags"]) == list(direct["flags"])


def test_pickers_offer_the_measured_metrics_and_channels(board):
    assert board.metric_picker.options[0] == "focus_score"
    assert "power_log_log_slope" in board.metric_picker.options
    assert board.channel_picker.options == ("w1", "w2")
    board.metric_picker.value = "mean_intensity"
    board.channel_picker.value = "w2"
    assert board.heatmap.title.text == "mean_intensity (w2)"
    assert len(board.heatmap_box.children) == 1  # the old heatmap widget was replaced


def test_clicking_a_well_shows_its_images_and_metrics(board):
    source = board.heatmap_source
    index = list(source.data["well"]).index("B03")
    source.selected.indices = [index]  # what a tap on the heatmap does
    assert board.selected_well == "B03"
    assert "Well B03" in board.well_title.value and "4 images" in board.well_title.value
    assert "mean_intensity" in board.well_metrics.value
    grid = board.well_images.children[0]._model  # the bokeh grid of this well's images
    figures = [child[0] for child in grid.children]
    assert len(figures) == 2  # two fields of channel w2
    assert all(f.renderers[0].data_source.data["image"][0].ndim == 2 for f in figures)


def test_a_click_on_an_empty_well_changes_nothing(board):
    board.select_well("B02")
    source = board.heatmap_source
    source.selected.indices = [list(source.data["well"]).index("H12")]
    assert board.selected_well == "B02"


def test_flagged_wells_are_listed(board):
    assert board.flagged_wells == ["B02"]
    assert "B02" in board.flagged.value and "blur" in board.flagged.value
    assert "B03" not in board.flagged.value


def test_bad_inputs(board, sampledata, tmp_path):
    with pytest.raises(ValueError, match="well 'P24' has no images on this plate"):
        board.select_well("P24")
    fresh = PlateQCDashboard(sampledata / "hcs" / "ImageXpress_9987_Plate_3435")
    assert fresh.metric_picker.disabled and "not measured yet" in fresh.progress_label.value
    with pytest.raises(RuntimeError, match="run the QC first"):
        fresh.select_well("B02")
    (tmp_path / "notes.txt").write_text("not a plate")
    with pytest.raises(PlateNotFoundError):
        PlateQCDashboard(tmp_path)
