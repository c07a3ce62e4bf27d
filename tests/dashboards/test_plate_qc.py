"""PlateQCDashboard on a real ImageXpress export: progress, verdicts, sliders, well clicks."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets", reason="the dashboards need ipywidgets (the viz extra)")
pytest.importorskip("jupyter_bokeh", reason="the dashboards need jupyter_bokeh (the viz extra)")

from autotx_lib.dashboards import PlateQCDashboard  # noqa: E402
from autotx_lib.imaging.plate import PlateNotFoundError, plate_qc  # noqa: E402

PLATE = ("hcs", "ImageXpress_9987_Plate_3435")


@pytest.fixture(scope="module")
def board(sampledata):
    # a strict focus threshold, so that this healthy plate has a well to redo
    return PlateQCDashboard(sampledata.joinpath(*PLATE), run=True,
                            thresholds={"out-of-focus": 0.3}, n_workers=2)


def test_progress_reaches_every_image_and_the_verdicts_match_the_library(board, sampledata):
    assert board.progress.value == board.progress.max == len(board.plate.records) == 8
    assert "8 images measured, 1 flagged, 0 unreadable" in board.progress_label.value
    direct = plate_qc(sampledata.joinpath(*PLATE), thresholds={"out_of_focus": 0.3},
                      n_workers=2)
    assert list(board.table["verdict"]) == list(direct["verdict"])
    assert "channels DAPI, FITC" in board.header.value  # names from the .HTD
    assert "96-well plate" in board.header.value and "guessed" not in board.header.value


def test_pickers_offer_plain_metric_names_and_channel_names(board):
    labels = dict(board.metric_picker.options)
    assert labels["Sharpness (power-spectrum slope)"] == "sharpness"
    assert "mean_intensity" in labels.values() and "power_log_log_slope" in labels.values()
    assert len(set(labels.values())) == len(labels)  # no value offered twice
    assert board.channel_picker.options == (("DAPI (w1)", "w1"), ("FITC (w2)", "w2"))
    board.metric_picker.value = "brightness"
    board.channel_picker.value = "w2"
    assert board.heatmap.title.text == "Brightness against the plate (signal fold) - FITC (w2)"
    assert len(board.heatmap_box.children) == 1  # the old heatmap widget was replaced


def test_the_plate_map_shows_each_wells_verdict(board):
    source = board.plate_map_source
    verdicts = dict(zip(source.data["well"], source.data["verdict"], strict=True))
    assert verdicts["B02"] == "out of focus" and verdicts["B03"] == "ok"
    assert verdicts["H12"] == "not imaged"
    assert board.flagged_wells == ["B02"]
    assert "B02" in board.flagged.value and "out of focus" in board.flagged.value
    assert "PowerLogLogSlope" in board.flagged.value and "B03" not in board.flagged.value


def test_clicking_a_well_outlines_it_everywhere_and_hides_no_other_well(board):
    source = board.plate_map_source
    index = list(source.data["well"]).index("B03")
    source.selected.indices = [index]  # what a tap on the plate map does
    assert board.selected_well == "B03"
    assert "Well B03" in board.well_title.value and "4 images" in board.well_title.value
    assert board.heatmap_source.selected.indices == [index]  # the heatmap follows
    renderer = next(r for r in board.plate_map.renderers if r.data_source is source)
    assert renderer.nonselection_glyph.fill_alpha == renderer.glyph.fill_alpha  # not dimmed
    colour = renderer.nonselection_glyph.fill_color  # the verdict's colour, as unselected
    assert getattr(colour, "field", colour) == "colour" == renderer.glyph.fill_color
    assert renderer.selection_glyph.line_width == 3  # the selected well is outlined
    grid = board.well_images.children[0]._model  # the bokeh grid of this well's images
    figures = [child[0] for child in grid.children]
    assert len(figures) == 2  # two fields of the picked channel
    assert all(f.renderers[0].data_source.data["image"][0].ndim == 2 for f in figures)


def test_a_click_on_an_empty_well_changes_nothing(board):
    board.select_well("B02")
    source = board.heatmap_source
    source.selected.indices = [list(source.data["well"]).index("H12")]
    assert board.selected_well == "B02"
    assert source.selected.indices == [list(source.data["well"]).index("B02")]


def test_moving_a_slider_decides_the_verdicts_again_without_measuring(board):
    measured = board.progress.value
    board.sliders["out_of_focus"].value = 2.0
    assert board.thresholds["out_of_focus"] == 2.0
    assert "8 images measured, 0 flagged" in board.progress_label.value
    assert set(board.plate_map_source.data["verdict"]) == {"ok", "not imaged"}
    assert "every well is ok" in board.flagged.value
    board.set_thresholds({"dark": 0.99})  # what the dark slider does
    assert board.sliders["dark"].value == pytest.approx(0.99)
    assert "dark" in set(board.plate_map_source.data["verdict"])
    assert board.progress.value == measured  # nothing was read again
    board.set_thresholds({"out_of_focus": 0.3, "dark": 0.25})
    assert board.flagged_wells == ["B02"]


def test_bad_inputs(board, sampledata, tmp_path):
    with pytest.raises(ValueError, match="well 'P24' has no images on this plate"):
        board.select_well("P24")
    with pytest.raises(ValueError, match="unknown threshold 'blur'"):
        board.set_thresholds({"blur": 1})
    fresh = PlateQCDashboard(sampledata.joinpath(*PLATE))
    assert fresh.metric_picker.disabled and "not measured yet" in fresh.progress_label.value
    with pytest.raises(RuntimeError, match="run the QC first"):
        fresh.select_well("B02")
    (tmp_path / "notes.txt").write_text("not a plate")
    with pytest.raises(PlateNotFoundError):
        PlateQCDashboard(tmp_path)
