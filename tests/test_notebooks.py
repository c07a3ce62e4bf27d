"""The worked examples render without a kernel: widgets from their saved state, images as images.

`tools/execute_notebooks.py` executes a notebook and stores its widget state; the notebooks
themselves run under nbval (pyproject testpaths), which checks what they compute.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _outputs(notebook) -> list[dict]:
    return [o for cell in notebook.cells for o in cell.get("outputs", [])]


def test_transfer_monitor_renders_its_widgets_in_html():
    from nbconvert import HTMLExporter

    notebook = nbformat.read(NOTEBOOKS / "transfer_monitor.ipynb", as_version=4)
    state = notebook.metadata["widgets"][WIDGET_STATE]["state"]
    views = [o["data"][WIDGET_VIEW]["model_id"] for o in _outputs(notebook)
             if WIDGET_VIEW in o.get("data", {})]
    assert views and all(v in state for v in views)  # each view's model was saved

    html, _ = HTMLExporter().from_notebook_node(notebook)

    assert WIDGET_STATE in html and WIDGET_VIEW in html and views[0] in html


def test_reading_images_shows_the_plane_as_an_image():
    notebook = nbformat.read(NOTEBOOKS / "reading_images.ipynb", as_version=4)
    images = [o for o in _outputs(notebook) if "image/png" in o.get("data", {})]
    assert images, "the plane should be shown as a PNG, not as text"
    texts = "".join(o.get("text", "") for o in _outputs(notebook))
    assert " .:-=+*#%@"[3:] not in texts  # no ASCII-art stand-in


@pytest.mark.parametrize("name", ["transfer_agent", "transfer_monitor", "reading_images",
                                  "omero_import"])
def test_notebooks_find_sample_data_in_one_place(name):
    source = "".join(c.source for c in nbformat.read(NOTEBOOKS / f"{name}.ipynb",
                                                     as_version=4).cells)
    assert "shared" not in source or "sampledata_path()" in source
    assert "Path.cwd()" not in source  # runnable from any folder, and from an installed package


def test_execute_notebooks_stores_widget_state(tmp_path):
    """The tool itself, on a small notebook with one widget (a real kernel runs it)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from execute_notebooks import main
    finally:
        sys.path.remove(str(ROOT / "tools"))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import ipywidgets\nipywidgets.IntSlider(value=7, description='seven')")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    path = tmp_path / "one_widget.ipynb"
    nbformat.write(notebook, path)

    assert main([str(path)]) == 0

    executed = nbformat.read(path, as_version=4)
    state = executed.metadata["widgets"][WIDGET_STATE]["state"]
    sliders = [m for m in state.values() if m["model_name"] == "IntSliderModel"]
    assert [s["state"]["value"] for s in sliders] == [7]
    assert "execution" not in executed.cells[0].metadata  # no timestamps to diff
    json.dumps(executed)  # plain JSON


def test_sampledata_path_prefers_the_environment(tmp_path, monkeypatch):
    from autotx_lib.sampledata import SampleDataNotFoundError, sampledata_path

    monkeypatch.setenv("AUTOTX_SAMPLEDATA", str(tmp_path))
    assert sampledata_path() == tmp_path
    monkeypatch.setenv("AUTOTX_SAMPLEDATA", str(tmp_path / "nowhere"))
    with pytest.raises(SampleDataNotFoundError, match="AUTOTX_SAMPLEDATA=.*is not a folder"):
        sampledata_path()
    monkeypatch.delenv("AUTOTX_SAMPLEDATA")
    assert (sampledata_path() / "SOURCES.md").is_file()  # ../shared/sampledata of the checkout
