"""StackBrowser: pick a microscopy file (and scene) in a folder and look through it.

Files are opened with :func:`autotx_lib.imaging.readers.open_image` and shown in the
:class:`~autotx_lib.imaging.viewer.StackViewer`, with the file's metadata beside it.

Examples
--------
>>> from autotx_lib.dashboards import StackBrowser       # doctest: +SKIP
>>> StackBrowser("/data/alice/HeLa_DAPI_63x").widget      # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from autotx_lib._optional import require
from autotx_lib.dashboards._format import html_table, human_bytes
from autotx_lib.imaging.readers import open_image, registry
from autotx_lib.imaging.viewer import StackViewer

#: At most this many files are listed (the first, in sorted order).
MAX_FILES = 2000

#: Suffixes Bio-Formats claims that are notes and tables far more often than images.
TEXT_SUFFIXES = frozenset({"txt", "csv", "log", "json", "md", "htm", "html", "ini", "cfg"})


def microscopy_files(folder: str | os.PathLike, *, recursive: bool = True,
                     limit: int = MAX_FILES) -> list[Path]:
    """Files under ``folder`` whose suffix a reader backend claims, sorted.

    Hidden files and folders (names starting with a dot) and text files
    (:data:`TEXT_SUFFIXES`) are skipped.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder; give the folder to browse")
    suffixes = {ext for spec in registry.specs for ext in spec.extensions} - TEXT_SUFFIXES
    found = []
    walker = root.rglob("*") if recursive else root.glob("*")
    for path in sorted(walker):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        name = path.name.lower()
        if path.is_file() and any(name.endswith("." + s) for s in suffixes):
            found.append(path)
            if len(found) >= limit:
                break
    return found


class StackBrowser:
    """A file picker, a scene picker, the file's metadata and a stack viewer.

    Parameters
    ----------
    folder : path
        The folder to browse (recursively).
    recursive : bool, optional
        Look into sub-folders too.
    open_first : bool, optional
        Open the first file at once.
    **viewer_options
        Passed to :class:`~autotx_lib.imaging.viewer.StackViewer` (``palette``, ``width``...).

    Attributes
    ----------
    files : list of Path
    image : Image or None
        The open file.
    viewer : StackViewer or None
    """

    def __init__(self, folder: str | os.PathLike, *, recursive: bool = True,
                 open_first: bool = True, **viewer_options: Any) -> None:
        require("ipywidgets", "for the stack browser")
        self.folder = Path(folder)
        self.files = microscopy_files(self.folder, recursive=recursive)
        self.viewer_options = viewer_options
        self.image = None
        self.viewer: StackViewer | None = None
        self._build()
        if open_first and self.files:
            self._guarded(f"cannot open {self.files[0].name}", lambda: self.open(self.files[0]))

    def _build(self) -> None:
        import ipywidgets as W

        options = [(str(p.relative_to(self.folder)), str(p)) for p in self.files]
        self.header = W.HTML(f"<h3 style='margin:4px 0'>{html.escape(str(self.folder))}</h3>"
                             f"{len(self.files)} microscopy file(s)")
        self.file_picker = W.Dropdown(options=options, value=None, description="file",
                                      layout=W.Layout(width="560px"))
        self.scene_picker = W.Dropdown(options=[], description="scene", disabled=True,
                                       layout=W.Layout(width="400px"))
        self.metadata = W.HTML(layout=W.Layout(flex="1 1 0", min_width="240px"))
        self.message = W.HTML("" if self.files else "<i>no microscopy file in this folder</i>")
        self.viewer_box = W.Box(layout=W.Layout(flex="0 0 auto"))  # long metadata never squeezes it
        self._quiet = False
        self.file_picker.observe(self._on_file, names="value")
        self.scene_picker.observe(self._on_scene, names="value")
        self.widget = W.VBox([
            self.header, W.HBox([self.file_picker, self.scene_picker]), self.message,
            W.HBox([self.viewer_box, self.metadata]),
        ])
        self.widget.add_class("autotx-stack-browser")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _on_file(self, change: dict) -> None:
        if not self._quiet and change["new"]:
            self._guarded(f"cannot open {Path(change['new']).name}",
                          lambda: self.open(change["new"]))

    def _on_scene(self, change: dict) -> None:
        if not self._quiet and change["new"] is not None and self.image is not None:
            self._guarded(f"cannot show scene {change['new']}",
                          lambda: self.show_scene(change["new"]))

    def _guarded(self, what: str, action: Any) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - shown; the browser stays usable
            self.show_error(f"{what}: {error}")

    def show_error(self, text: str) -> None:
        """Show a one-line error above the view (long messages are cut at 400 characters)."""
        line = " ".join(str(text).split())
        if len(line) > 400:
            line = line[:399] + "…"
        self.message.value = f"<span style='color:#d62728'>{html.escape(line)}</span>"

    def open(self, path: str | os.PathLike, scene: int | str | None = None) -> StackViewer:
        """Open a file (closing the previous one) and show a scene (default the first).

        If the file cannot be opened or shown, the error is raised and the browser is left
        empty (the previous file is closed too): it never shows one file's pixels or
        metadata beside another file's name.
        """
        self._quiet = True
        try:
            if str(path) in {v for _, v in self.file_picker.options}:
                self.file_picker.value = str(path)
        finally:
            self._quiet = False
        self.clear()
        self.image = open_image(path)
        self._quiet = True
        try:
            self.scene_picker.options = [(str(s), s.index) for s in self.image.scenes]
            self.scene_picker.disabled = len(self.image.scenes) < 2
        finally:
            self._quiet = False
        return self.show_scene(0 if scene is None else scene)

    def show_scene(self, scene: int | str) -> StackViewer:
        """Show one scene of the open file (if it cannot be shown, the view is left empty)."""
        if self.image is None:
            raise RuntimeError("open a file first")
        self._clear_view()
        self.image.set_scene(scene)
        self._quiet = True
        try:
            self.scene_picker.value = self.image.current_scene_index
        finally:
            self._quiet = False
        self.viewer = StackViewer(self.image, **self.viewer_options)
        self.viewer_box.children = [self.viewer.widget]
        self.message.value = ""
        self._show_metadata()
        return self.viewer

    def _clear_view(self) -> None:
        """Empty the viewer and the metadata panel."""
        if self.viewer is not None:
            self.viewer.close()
            self.viewer = None
        self.viewer_box.children = []
        self.metadata.value = ""

    def _show_metadata(self) -> None:
        image = self.image
        dims = image.dims
        pz, py, px = image.physical_pixel_sizes
        size = os.path.getsize(image.path) if image.path.is_file() else None
        rows = [
            ("file", image.path.name), ("size on disk", human_bytes(size)),
            ("reader", image.name), ("scene", f"{image.current_scene} "
                                              f"({image.current_scene_index + 1} of {len(image.scenes)})"),
            ("dimensions", str(dims)), ("pixel type", str(image.dtype)),
            ("pixel size (x, y, z)", ", ".join("?" if v is None else f"{v:.4g} µm"
                                               for v in (px, py, pz))),
            ("channels", ", ".join(image.channel_names)),
        ]
        if image.plate is not None:
            rows.append(("plate", f"{image.plate.name} ({image.plate.rows} x "
                                  f"{image.plate.columns})"))
        self.metadata.value = "<b>Metadata</b>" + html_table(["", ""], rows)

    def clear(self) -> None:
        """Close the open file and empty the viewer, the metadata and the scene list."""
        self._clear_view()
        if self.image is not None:
            self.image.close()
            self.image = None
        self._quiet = True
        try:
            self.scene_picker.options = []
            self.scene_picker.disabled = True
        finally:
            self._quiet = False

    def close(self) -> None:
        """Close the open file and the viewer's widgets."""
        self.clear()
