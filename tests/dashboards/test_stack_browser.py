"""StackBrowser: files of a folder, scenes, metadata and the viewer, on real files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("ipywidgets", reason="the dashboards need ipywidgets (the viz extra)")
pytest.importorskip("jupyter_bokeh", reason="the dashboards need jupyter_bokeh (the viz extra)")

from autotx_lib.dashboards import StackBrowser  # noqa: E402
from autotx_lib.dashboards.stack_browser import microscopy_files  # noqa: E402
from autotx_lib.errors import ReaderError  # noqa: E402
from autotx_lib.imaging.readers import open_image  # noqa: E402


@pytest.fixture
def folder(sampledata, tmp_path):
    shutil.copy(sampledata / "zstack" / "pycudadecon_psf_bead_LLS.tif", tmp_path / "bead.tif")
    (tmp_path / "sub").mkdir()
    shutil.copy(sampledata / "ome-tiff" / "ome_sample_multi-channel.ome.tif",
                tmp_path / "sub" / "multi.ome.tif")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    shutil.copy(tmp_path / "bead.tif", tmp_path / ".hidden" / "copy.tif")
    return tmp_path


def test_lists_microscopy_files_only(folder):
    assert [p.relative_to(folder).as_posix() for p in microscopy_files(folder)] == \
        ["bead.tif", "sub/multi.ome.tif"]
    assert [p.name for p in microscopy_files(folder, recursive=False)] == ["bead.tif"]


def test_opens_the_first_file_with_its_metadata(folder):
    browser = StackBrowser(folder)
    assert browser.file_picker.value == str(folder / "bead.tif")
    assert "T=1 C=1 Z=61 Y=128 X=128" in browser.metadata.value
    assert "tifffile" in browser.metadata.value and "uint16" in browser.metadata.value
    with open_image(folder / "bead.tif") as image:
        np.testing.assert_array_equal(browser.viewer.current, image.plane(z=30))
    browser.viewer.z_slider.value = 10
    np.testing.assert_array_equal(browser.viewer.current, browser.image.plane(z=10))
    browser.close()


def test_picking_another_file_shows_it(folder):
    browser = StackBrowser(folder)
    first = browser.image
    browser.file_picker.value = str(folder / "sub" / "multi.ome.tif")
    assert browser.image is not first and browser.image.path.name == "multi.ome.tif"
    assert "multi.ome.tif" in browser.metadata.value
    assert browser.viewer.channel_picker.options == tuple(
        (name, i) for i, name in enumerate(browser.image.channel_names))
    assert len(browser.viewer.channel_picker.options) == browser.image.dims.C > 1
    browser.close()


def test_scenes_of_a_multi_scene_file(sampledata, tmp_path):
    shutil.copy(sampledata / "czi" / "czitools_S3_1Pos_2Mosaic_T1_Z1_CH1.czi", tmp_path / "s.czi")
    browser = StackBrowser(tmp_path)
    scenes = browser.scene_picker.options
    assert len(scenes) == len(browser.image.scenes)
    if len(scenes) < 2:
        pytest.skip(f"the reader shows {len(scenes)} scene(s) in this file; nothing to switch")
    browser.scene_picker.value = scenes[1][1]
    assert browser.image.current_scene_index == 1
    assert f"(2 of {len(scenes)})" in browser.metadata.value
    browser.close()


def test_unreadable_file_is_reported_and_clears_the_previous_one(folder):
    (folder / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    browser = StackBrowser(folder)  # bead.tif opens first
    previous = browser.image
    assert browser.viewer_box.children and "bead.tif" in browser.metadata.value
    browser.file_picker.value = str(folder / "broken.tif")
    message = browser.message.value
    assert "cannot open broken.tif: cannot read" in message and "\n" not in message
    assert "probably truncated or damaged" in message  # the reader's advice is kept
    # nothing of bead.tif is left beside the broken file's name
    assert browser.file_picker.value == str(folder / "broken.tif")
    assert browser.image is None and browser.viewer is None
    assert browser.viewer_box.children == () and browser.metadata.value == ""
    assert browser.scene_picker.options == () and browser.scene_picker.disabled
    with pytest.raises(Exception, match="closed"):
        previous.plane(z=0)  # the previous file was closed, not left open
    browser.file_picker.value = str(folder / "sub" / "multi.ome.tif")
    assert browser.message.value == "" and browser.image.path.name == "multi.ome.tif"
    assert "multi.ome.tif" in browser.metadata.value and browser.viewer_box.children
    browser.close()


def test_open_raises_and_leaves_the_browser_empty(folder):
    browser = StackBrowser(folder)
    with pytest.raises(ReaderError, match="no such file"):
        browser.open(folder / "missing.tif")
    assert browser.image is None and browser.viewer is None and browser.metadata.value == ""


def test_a_broken_first_file_does_not_stop_the_browser(folder):
    (folder / "a_broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    browser = StackBrowser(folder)
    assert "cannot open a_broken.tif" in browser.message.value
    assert browser.image is None and browser.viewer_box.children == ()
    browser.file_picker.value = str(folder / "bead.tif")
    assert browser.image.path.name == "bead.tif" and browser.message.value == ""
    browser.close()


def test_a_scene_that_cannot_be_shown_empties_the_view(folder):
    browser = StackBrowser(folder, z=40)  # bead.tif has 61 planes; multi.ome.tif has 1
    assert browser.viewer is not None and browser.viewer.z == 40
    browser.file_picker.value = str(folder / "sub" / "multi.ome.tif")
    assert "cannot open multi.ome.tif: z=40 is out of range" in browser.message.value
    assert browser.viewer is None and browser.viewer_box.children == ()
    assert browser.metadata.value == ""
    browser.close()


def test_empty_and_missing_folders(tmp_path):
    empty = StackBrowser(tmp_path)
    assert empty.files == [] and "no microscopy file" in empty.message.value
    assert empty.viewer is None
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        StackBrowser(tmp_path / "missing")
