"""A z-stack viewer for Jupyter: slice, slab MIP, palette, contrast, composite, orthogonal views.

:func:`view_stack` wraps an image (from :func:`~autotx_lib.imaging.readers.open_image`),
a numpy array or a dask array in a :class:`StackViewer`, whose ``.widget`` is an
ipywidgets box holding a bokeh figure (through jupyter_bokeh), so the Python callbacks
work in JupyterLab, Notebook 7 and Voila without a bokeh server. Only the planes the
view needs are read: a lazy image or dask array is never loaded whole, except for the
orthogonal views, which need every plane of the current channel.

The slab computation is the pure function :func:`slab_mip`; :func:`auto_contrast`
and :func:`palette_colors` are pure too, as are the channel colours and the colour
composite of several channels (:mod:`autotx_lib.imaging.composite`).

Examples
--------
>>> from autotx_lib.imaging.readers import open_image     # doctest: +SKIP
>>> viewer = view_stack(open_image("stack.ome.tif"))      # doctest: +SKIP
>>> viewer.widget                                          # doctest: +SKIP
>>> viewer.set(z=30, half_width=8, palette="Magma256")    # doctest: +SKIP
>>> viewer.set(composite=True).set_channel("DAPI", color="#0080ff", contrast=(100, 900))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import html
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.imaging.composite import (
    channel_colors,
    color_hex,
    composite_rgba,
    image_channel_colors,
    parse_color,
)

#: Colour palettes offered by the viewer: bokeh's 256-colour maps, then single-colour
#: lookup tables (black to the colour), as on a fluorescence microscope's screen.
MULTICOLOUR_PALETTES = ("Greys256", "Viridis256", "Inferno256", "Magma256", "Cividis256",
                        "Plasma256", "Turbo256")
SINGLE_COLOUR_LUTS = {
    "Gray": (255, 255, 255), "Red": (255, 0, 0), "Green": (0, 255, 0), "Blue": (0, 0, 255),
    "Cyan": (0, 255, 255), "Magenta": (255, 0, 255), "Yellow": (255, 255, 0),
}
PALETTES = MULTICOLOUR_PALETTES + tuple(SINGLE_COLOUR_LUTS)

#: Percentiles used for automatic contrast limits.
AUTO_PERCENTILES = (0.5, 99.8)


# --- pure functions ---------------------------------------------------------------------


def slab_range(n_planes: int, z: int, half_width: int) -> tuple[int, int]:
    """The planes ``[start, stop)`` of a slab around ``z``, clipped at the stack's ends.

    Parameters
    ----------
    n_planes : int
        Number of planes in the stack (> 0).
    z : int
        Centre plane, ``0 <= z < n_planes``.
    half_width : int
        Planes on each side of ``z`` (>= 0); 0 is the plane itself.

    Returns
    -------
    start, stop : int
        A Python range: ``stack[start:stop]``.

    Examples
    --------
    >>> slab_range(10, 1, 3), slab_range(10, 5, 0), slab_range(10, 9, 2)
    ((0, 5), (5, 6), (7, 10))
    """
    for name, value in (("n_planes", n_planes), ("z", z), ("half_width", half_width)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if n_planes < 1:
        raise ValueError(f"the stack has {n_planes} planes; it needs at least one")
    if not 0 <= z < n_planes:
        raise IndexError(f"z={z} is out of range for a stack of {n_planes} planes "
                         f"(valid 0..{n_planes - 1})")
    if half_width < 0:
        raise ValueError(f"half_width={half_width} is negative; use 0 for the plane itself")
    return max(0, int(z) - int(half_width)), min(int(n_planes), int(z) + int(half_width) + 1)


def slab_mip(stack: Any, z: int, half_width: int) -> np.ndarray:
    """Maximum-intensity projection of the planes ``z - half_width .. z + half_width``.

    Parameters
    ----------
    stack : (Z, Y, X) array-like
        A numpy array, a dask array (only the slab's planes are computed), or any object
        with ``shape`` and slicing along its first axis.
    z : int
        Centre plane.
    half_width : int
        Planes on each side of ``z``; 0 gives plane ``z`` itself. The slab is clipped at
        the stack's ends (near the top it holds fewer planes).

    Returns
    -------
    mip : (Y, X) numpy.ndarray
        Same dtype as ``stack``.

    Raises
    ------
    ValueError
        If ``stack`` is not 3-D or ``half_width`` is negative.
    IndexError
        If ``z`` is outside the stack.

    Examples
    --------
    >>> stack = np.arange(4 * 2 * 2).reshape(4, 2, 2)
    >>> slab_mip(stack, 0, 1)[0, 0], slab_mip(stack, 3, 0)[0, 0]
    (np.int64(4), np.int64(12))
    """
    shape = getattr(stack, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"stack must be 3-D (Z, Y, X), got shape {shape}; for a 5-D "
                         "TCZYX array pass stack[t, c]")
    start, stop = slab_range(int(shape[0]), z, half_width)
    result = stack[start] if stop - start == 1 else stack[start:stop].max(axis=0)
    if hasattr(result, "compute"):  # dask: only the slab's chunks are read
        result = result.compute()
    return np.asarray(result)


def auto_contrast(image: np.ndarray, percentiles: tuple[float, float] = AUTO_PERCENTILES,
                  *, max_samples: int = 1 << 18) -> tuple[float, float]:
    """Contrast limits from percentiles of an image (a regular subsample of large ones).

    Parameters
    ----------
    image : ndarray
        Any dtype; NaN is ignored.
    percentiles : (float, float)
        Low and high percentiles, 0..100.
    max_samples : int
        Larger images are subsampled on a regular grid to about this many pixels.

    Returns
    -------
    low, high : float
        ``low < high`` always (a flat image gets ``high = low + 1``).

    Examples
    --------
    >>> auto_contrast(np.arange(101, dtype=np.uint8), (0, 100))
    (0.0, 100.0)
    """
    low_p, high_p = percentiles
    if not 0 <= low_p < high_p <= 100:
        raise ValueError(f"percentiles {percentiles} must satisfy 0 <= low < high <= 100")
    values = np.asarray(image)
    if values.size == 0:
        raise ValueError("cannot choose contrast limits for an empty image")
    step = max(1, int(np.sqrt(values.size / max_samples)))
    sample = values[..., ::step, ::step] if values.ndim >= 2 else values[::step]
    sample = sample.astype(np.float64, copy=False).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(sample, [low_p, high_p]))
    if high <= low:
        high = low + 1.0
    return low, high


def palette_colors(name: str) -> tuple[str, ...]:
    """The 256 colours of a palette in :data:`PALETTES`, low to high.

    Examples
    --------
    >>> colours = palette_colors("Green")
    >>> len(colours), colours[0], colours[-1]
    (256, '#000000', '#00ff00')
    """
    if name in SINGLE_COLOUR_LUTS:
        r, g, b = SINGLE_COLOUR_LUTS[name]
        return tuple(f"#{r * i // 255:02x}{g * i // 255:02x}{b * i // 255:02x}" for i in range(256))
    if name not in MULTICOLOUR_PALETTES:
        raise ValueError(f"unknown palette {name!r}; choose one of {', '.join(PALETTES)}")
    from bokeh import palettes

    return tuple(getattr(palettes, name))


# --- pixel sources ----------------------------------------------------------------------


class _PlaneCache:
    """Reads ``(Y, X)`` planes of an Image through ``plane(t, c, z)``, keeping the recent ones."""

    def __init__(self, image: Any, max_bytes: int = 256 * 2**20) -> None:
        self.image = image
        self.max_bytes = max_bytes
        self._planes: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.reads = 0  # planes read from the image (for tests and curiosity)

    def plane(self, t: int, c: int, z: int) -> np.ndarray:
        key = (t, c, z)
        with self._lock:
            if key in self._planes:
                self._planes.move_to_end(key)
                return self._planes[key]
        plane = np.asarray(self.image.plane(t=t, c=c, z=z))
        if not plane.flags.writeable:
            # a read-only plane may be a view of the file's memory map (nd2), which is gone
            # once the file is closed: the cache keeps a copy that stays valid
            plane = plane.copy()
        with self._lock:
            self.reads += 1
            self._planes[key] = plane
            self._bytes += plane.nbytes
            while self._bytes > self.max_bytes and len(self._planes) > 1:
                _, old = self._planes.popitem(last=False)
                self._bytes -= old.nbytes
        return plane


class _ImageStack:
    """One (t, c) of an Image as a lazy ``(Z, Y, X)`` stack that :func:`slab_mip` can slice."""

    def __init__(self, cache: _PlaneCache, t: int, c: int, shape: tuple[int, int, int],
                 dtype: np.dtype) -> None:
        self.cache, self.t, self.c, self.shape, self.dtype = cache, t, c, shape, dtype

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int | np.integer):
            return self.cache.plane(self.t, self.c, int(index))
        if isinstance(index, slice):
            return _PlaneRun([self.cache.plane(self.t, self.c, z)
                              for z in range(*index.indices(self.shape[0]))])
        raise TypeError("an image stack is indexed by one plane or a slice of planes")


class _PlaneRun:
    """A few planes whose ``max(axis=0)`` is computed in place, without stacking them."""

    def __init__(self, planes: list[np.ndarray]) -> None:
        self.planes = planes

    def max(self, axis: int = 0) -> np.ndarray:
        out = self.planes[0].copy()
        for plane in self.planes[1:]:
            np.maximum(out, plane, out=out)
        return out


def _as_tczyx(data: Any) -> Any:
    """A numpy or dask array with 2 to 5 dimensions, as TCZYX (leading axes added)."""
    shape = getattr(data, "shape", None)
    if shape is None:
        data = np.asarray(data)
        shape = data.shape
    if not 2 <= len(shape) <= 5:
        raise ValueError(f"an array of shape {tuple(shape)} cannot be viewed as a stack; give "
                         "2 (YX), 3 (ZYX), 4 (CZYX) or 5 (TCZYX) dimensions")
    if any(int(s) == 0 for s in shape):
        raise ValueError(f"the array of shape {tuple(shape)} is empty")
    if np.dtype(data.dtype).kind not in "uifb":
        raise ValueError(f"cannot display pixels of dtype {data.dtype}; use integers or floats")
    return data.reshape((1,) * (5 - len(shape)) + tuple(shape))


# --- the viewer -------------------------------------------------------------------------


def ensure_inline_bokeh() -> None:
    """Load BokehJS inline into the running notebook (once); no CDN is needed.

    Instrument PCs are often cut off from the web; jupyter_bokeh's widgets need BokehJS
    in the page. Outside a Jupyter kernel this does nothing.
    """
    global _BOKEH_LOADED
    if _BOKEH_LOADED:
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(INLINE, hide_banner=True)
    _BOKEH_LOADED = True


_BOKEH_LOADED = False


def bokeh_widget(model: Any) -> Any:
    """Wrap a bokeh layout in a jupyter_bokeh ``BokehModel`` widget (BokehJS loaded inline).

    The returned widget may be closed more than once (jupyter_bokeh's own ``close`` raises
    on the second call, e.g. from the garbage collector).
    """
    from jupyter_bokeh.widgets import BokehModel

    class _BokehModel(BokehModel):
        def close(self) -> None:
            with contextlib.suppress(KeyError):  # already detached from its document
                super().close()

        def _document_patched(self, event: Any) -> None:
            # as jupyter_bokeh does, but binary buffers go out as memoryviews, not copies
            # (an image patch is megabytes; the kernel's zmq socket sends memoryviews as is)
            if event.setter is self:
                return
            from bokeh.protocol import Protocol

            message = Protocol().create("PATCH-DOC", [event])
            self.send({"msg": "patch", "payload": message.header_json})
            self.send({"msg": "patch", "payload": message.metadata_json})
            self.send({"msg": "patch", "payload": message.content_json})
            for buffer in message.buffers:
                self.send({"msg": "patch", "payload": json.dumps(buffer.ref)})
                self.send({"msg": "patch"}, [memoryview(buffer.data).cast("B")])

    ensure_inline_bokeh()
    return _BokehModel(model)


class _ChannelControls:
    """The controls of one channel in the composite panel: shown, colour, contrast, auto."""

    def __init__(self, name: str, color: str, width: int) -> None:
        import ipywidgets as W

        self.visible = W.Checkbox(value=True, description=name, indent=False,
                                  tooltip=f"show {name} in the composite",
                                  layout=W.Layout(width="150px"))
        self.color = W.ColorPicker(value=color, concise=True, tooltip=f"colour of {name}",
                                   layout=W.Layout(width="34px"))
        self.contrast = W.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.001,
                                           readout_format=".4g", continuous_update=False,
                                           layout=W.Layout(width=f"{width}px"))
        self.auto = W.Button(description="auto", tooltip=f"contrast of {name} from percentiles",
                             layout=W.Layout(width="50px"))
        self.box = W.HBox([self.visible, self.color, self.contrast, self.auto],
                          layout=W.Layout(min_height="30px", flex="0 0 auto"))

    def close(self) -> None:
        for widget in (self.visible, self.color, self.contrast, self.auto, self.box):
            widget.close()


class StackViewer:
    """An interactive view of a z-stack; display :attr:`widget` in a notebook.

    One channel is shown through a palette (the colour mapper), or, in composite mode,
    several channels at once: each scaled between its own contrast limits, tinted with its
    colour and added (:func:`~autotx_lib.imaging.composite.composite_rgba`). Contrast
    limits are kept per channel (across z and t) until changed or set to ``"auto"``.

    Parameters
    ----------
    source : Image, ndarray or dask array
        An opened image (its current scene is shown), or an array of 2 to 5 dimensions
        read as the trailing axes of TCZYX.
    channel : int or str, optional
        Channel index or name to show first (default 0).
    t : int, optional
        Time point to show first.
    z : int, optional
        Plane to show first (default: the middle one).
    half_width : int, optional
        Slab half-width: planes on each side of ``z`` projected by maximum (0 = the plane).
    palette : str, optional
        One of :data:`PALETTES` (for one channel; the composite uses the channel colours).
    contrast : (float, float), optional
        Contrast limits of the first channel shown; default from percentiles of its image
        (:func:`auto_contrast`), as for every other channel.
    orthogonal : bool, optional
        Show XZ and YZ views through the crosshair (reads every plane of the channels shown).
    pixel_sizes : (z, y, x) in micrometres, optional
        Overrides the image's physical pixel sizes (arrays have none).
    width : int, optional
        Width of the main view in screen pixels.
    composite : bool, optional
        Show the channels together; default: when the source has several channels and no
        ``channel`` is given.
    colors : sequence, optional
        One colour per channel for the composite (``"#rrggbb"``, a name or ``(r, g, b)``);
        default from the image's metadata (:func:`~autotx_lib.imaging.composite.image_channel_colors`),
        else by channel index.

    Attributes
    ----------
    figure : bokeh.plotting.figure
        The XY view; ``source.data["image"][0]`` is the one-channel image on screen,
        ``source.data["rgba"][0]`` the composite.
    source : bokeh.models.ColumnDataSource
    color_mapper : bokeh.models.LinearColorMapper
    """

    def __init__(self, source: Any, *, channel: int | str | None = None, t: int = 0,
                 z: int | None = None, half_width: int = 0, palette: str = "Greys256",
                 contrast: tuple[float, float] | None = None, orthogonal: bool = False,
                 pixel_sizes: tuple[float | None, float | None, float | None] | None = None,
                 width: int = 560, composite: bool | None = None,
                 colors: Sequence[Any] | None = None) -> None:
        require("bokeh", "to draw the stack viewer")
        require("ipywidgets", "for the stack viewer's controls")
        self._lock = threading.RLock()
        if hasattr(source, "plane") and hasattr(source, "dims"):  # a readers Image
            self.image = source
            dims = source.dims
            self._shape = (dims.T, dims.C, dims.Z, dims.Y, dims.X)
            self.dtype = np.dtype(source.dtype)
            self._cache: _PlaneCache | None = _PlaneCache(source)
            self._array = None
            names = list(source.channel_names)
            # an XZ or XT scan's array axes are not physical z, y, x: draw what they are
            sizes = tuple(getattr(source, "array_pixel_sizes", source.physical_pixel_sizes))
            axes = getattr(source, "scan_axes", "ZYX")
        else:
            self.image = None
            self._array = _as_tczyx(source)
            self._shape = tuple(int(s) for s in self._array.shape)
            self.dtype = np.dtype(self._array.dtype)
            self._cache = None
            names = [f"C:{i}" for i in range(self._shape[1])]
            sizes = (None, None, None)
            axes = "ZYX"
        self.channel_names = names
        self.pixel_sizes = tuple(pixel_sizes) if pixel_sizes is not None else sizes
        #: physical names of the array's z, y, x axes: ("z", "y", "x"); an XZ scan's rows
        #: are depth ("y", "z", "x"), an XT line scan's rows are time ("z", "t", "x")
        self.axis_names = tuple(axis.lower() for axis in axes)
        if palette not in PALETTES:
            raise ValueError(f"unknown palette {palette!r}; choose one of {', '.join(PALETTES)}")
        T, C, Z, Y, X = self._shape
        self._t = self._check_index("t", t, T)
        self._c = self._channel_index(0 if channel is None else channel)
        self._z = self._check_index("z", Z // 2 if z is None else z, Z)
        slab_range(Z, self._z, half_width)  # validates half_width
        self._half_width = int(half_width)
        if colors is not None:
            self._colors = channel_colors(C, colors=list(colors))
        elif self.image is not None:
            self._colors = image_channel_colors(self.image)
        else:
            self._colors = channel_colors(C)
        self._visible = [True] * C
        self._limits: list[tuple[float, float] | None] = [None] * C
        if contrast is not None:
            self._limits[self._c] = self._check_contrast(contrast)
        self._stale: set[int] = set()  # channels whose contrast slider needs new bounds
        self._projections: dict[int, np.ndarray] = {}  # channel -> image, for this t, z, slab
        self._composite = (C > 1 and channel is None) if composite is None else bool(composite)
        self._palette = palette
        self._orthogonal = bool(orthogonal)
        self._cross = (Y // 2, X // 2)
        self._width = width
        self._widget = None
        self._build_figures()
        self._draw()
        self._apply_contrast()
        self._show_mode()
        if self._orthogonal:
            self._render_orthogonal()

    # --- validation ---------------------------------------------------------------------

    @staticmethod
    def _check_index(name: str, value: Any, size: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value < size:
            raise IndexError(f"{name}={value} is out of range (valid 0..{size - 1})")
        return int(value)

    @staticmethod
    def _check_contrast(contrast: Any) -> tuple[float, float] | str:
        if isinstance(contrast, str):
            if contrast != "auto":
                raise ValueError(f"contrast must be (low, high) or 'auto', not {contrast!r}")
            return contrast
        low, high = (float(v) for v in contrast)
        if not low < high:
            raise ValueError(f"contrast {contrast} must be (low, high) with low < high")
        return low, high

    def _channel_index(self, channel: int | str) -> int:
        if isinstance(channel, str):
            if channel not in self.channel_names:
                raise ValueError(f"channel {channel!r} is not in this image; channels: "
                                 f"{self.channel_names}")
            return self.channel_names.index(channel)
        return self._check_index("channel", channel, self._shape[1])

    # --- pixels -------------------------------------------------------------------------

    def stack(self, t: int | None = None, c: int | None = None) -> Any:
        """The ``(Z, Y, X)`` stack of one time point and channel, lazy for images and dask."""
        t = self._t if t is None else t
        c = self._c if c is None else c
        if self._array is not None:
            return self._array[t, c]
        T, C, Z, Y, X = self._shape
        return _ImageStack(self._cache, t, c, (Z, Y, X), self.dtype)

    def _projection(self, c: int) -> np.ndarray:
        """The slab projection of channel ``c`` at the current t and z (computed once)."""
        image = self._projections.get(c)
        if image is None:
            image = slab_mip(self.stack(c=c), self._z, self._half_width)
            self._projections[c] = image
        return image

    def _channel_limits(self, c: int) -> tuple[float, float]:
        """Contrast limits of channel ``c``; automatic from its image the first time."""
        limits = self._limits[c]
        if limits is None:
            limits = self._limits[c] = auto_contrast(self._projection(c))
            self._stale.add(c)
        return limits

    @property
    def planes_read(self) -> int | None:
        """Planes read from the image so far (None for arrays)."""
        return None if self._cache is None else self._cache.reads

    @property
    def current(self) -> np.ndarray:
        """(Y, X) ndarray : The selected channel's plane or slab projection at this z and t.

        In one-channel mode it is the image on screen; in composite mode see
        :attr:`composite_image`.
        """
        with self._lock:
            return self._projection(self._c)

    @property
    def composite_image(self) -> np.ndarray | None:
        """(Y, X) uint32 ndarray or None : The composite on screen (RGBA bytes), if shown."""
        return self.source.data["rgba"][0] if self._composite else None

    @property
    def z(self) -> int:
        return self._z

    @property
    def t(self) -> int:
        return self._t

    @property
    def channel(self) -> int:
        return self._c

    @property
    def half_width(self) -> int:
        return self._half_width

    @property
    def palette(self) -> str:
        return self._palette

    @property
    def contrast(self) -> tuple[float, float]:
        """(low, high) : Contrast limits of the selected channel."""
        with self._lock:
            return self._channel_limits(self._c)

    @property
    def composite(self) -> bool:
        """bool : Whether the channels are shown together."""
        return self._composite

    @property
    def channel_colors(self) -> list[str]:
        """list of str : The composite colour of each channel, ``"#rrggbb"``."""
        return [color_hex(rgb) for rgb in self._colors]

    @property
    def channel_visible(self) -> list[bool]:
        """list of bool : Which channels the composite shows."""
        return list(self._visible)

    @property
    def channel_contrast(self) -> list[tuple[float, float]]:
        """list of (low, high) : Contrast limits of each channel (automatic where unset)."""
        with self._lock:
            return [self._channel_limits(c) for c in range(self._shape[1])]

    @property
    def orthogonal(self) -> bool:
        return self._orthogonal

    @property
    def crosshair(self) -> tuple[int, int]:
        """(y, x) : Where the orthogonal views cut the stack, in pixels."""
        return self._cross

    # --- figures ------------------------------------------------------------------------

    def _units(self) -> tuple[float, float, float, str]:
        """Size of one pixel along z, y, x in display units, and the unit's name."""
        pz, py, px = self.pixel_sizes
        if py and px:
            return float(pz or px), float(py), float(px), "µm"
        return 1.0, 1.0, 1.0, "px"

    def _add_images(self, fig: Any, source: Any, **place: Any) -> tuple[Any, Any]:
        """A colour-mapped renderer of ``image`` and an RGBA renderer of ``rgba`` on ``fig``."""
        mapped = fig.image(image="image", color_mapper=self.color_mapper, source=source,
                           origin="bottom_left", anchor="bottom_left", **place)
        rgba = fig.image_rgba(image="rgba", source=source, origin="bottom_left",
                              anchor="bottom_left", **place)
        self._renderers.append((mapped, rgba))
        return mapped, rgba

    def _empty_source(self, **columns: Any) -> Any:
        from bokeh.models import ColumnDataSource

        return ColumnDataSource({"image": [np.zeros((1, 1), self.dtype)],
                                 "rgba": [np.zeros((1, 1), np.uint32)], **columns})

    def _build_figures(self) -> None:
        from bokeh.models import (
            ColorBar,
            HoverTool,
            LinearColorMapper,
            Metric,
            Range1d,
            ScaleBar,
            Span,
        )
        from bokeh.plotting import figure

        T, C, Z, Y, X = self._shape
        uz, uy, ux, unit = self._units()
        nz, ny, nx = self.axis_names
        width = self._width
        height = max(120, int(width * (Y * uy) / (X * ux)))
        self.color_mapper = LinearColorMapper(palette=palette_colors(self._palette),
                                              low=0, high=1)
        self._renderers: list[tuple[Any, Any]] = []
        self.source = self._empty_source(x=[0.0], y=[0.0], dw=[X * ux], dh=[Y * uy])
        xy = figure(width=width, height=height, x_range=Range1d(0, X * ux),
                    y_range=Range1d(Y * uy, 0), tools="pan,wheel_zoom,box_zoom,reset,tap",
                    active_scroll="wheel_zoom", match_aspect=True, toolbar_location="above",
                    x_axis_label=f"{nx} ({unit})", y_axis_label=f"{ny} ({unit})")
        xy.grid.visible = False
        # y runs downwards (the first row at the top, as on the camera): the y range is
        # flipped, and the image glyph draws row 0 at the smallest y, which is now on top
        renderer, rgba = self._add_images(xy, self.source, x="x", y="y", dw="dw", dh="dh")
        self._hover = HoverTool(renderers=[renderer])  # tooltips follow the mode
        xy.add_tools(self._hover)
        self._color_bar = ColorBar(color_mapper=self.color_mapper, width=10)
        xy.add_layout(self._color_bar, "right")
        if unit == "µm":
            xy.add_layout(ScaleBar(range=xy.x_range, unit="µm", dimensional=Metric(base_unit="m"),
                                   location="bottom_right", bar_line_color="white",
                                   label_text_color="white", background_fill_alpha=0.0,
                                   border_line_alpha=0.0))
        self.scale_bar_unit = unit
        self.figure = xy
        self._renderer = renderer
        self._vline = Span(location=(self._cross[1] + 0.5) * ux, dimension="height",
                           line_color="yellow", line_alpha=0.6, visible=self._orthogonal)
        self._hline = Span(location=(self._cross[0] + 0.5) * uy, dimension="width",
                           line_color="yellow", line_alpha=0.6, visible=self._orthogonal)
        xy.add_layout(self._vline)
        xy.add_layout(self._hline)
        # orthogonal views: XZ below (x across, z down), YZ at the right (z across, y down)
        zh = max(60, int(width * (Z * uz) / (X * ux)))
        zh = min(zh, width)
        self.xz_source = self._empty_source()
        self.yz_source = self._empty_source()
        xz = figure(width=width, height=zh, x_range=xy.x_range, y_range=Range1d(Z * uz, 0),
                    tools="pan,wheel_zoom,reset", toolbar_location=None,
                    x_axis_label=f"{nx} ({unit})", y_axis_label=f"{nz} ({unit})")
        self._add_images(xz, self.xz_source, x=0, y=0, dw=X * ux, dh=Z * uz)
        yz = figure(width=zh, height=height, x_range=Range1d(0, Z * uz), y_range=xy.y_range,
                    tools="pan,wheel_zoom,reset", toolbar_location=None,
                    x_axis_label=f"{nz} ({unit})", y_axis_label=f"{ny} ({unit})")
        self._add_images(yz, self.yz_source, x=0, y=0, dw=Z * uz, dh=Y * uy)
        for fig in (xz, yz):
            fig.grid.visible = False
            fig.visible = self._orthogonal
        self.xz_figure, self.yz_figure = xz, yz
        from bokeh.events import Tap
        from bokeh.layouts import gridplot

        xy.on_event(Tap, self._on_tap)
        self.layout = gridplot([[xy, yz], [xz, None]], merge_tools=False,
                               toolbar_location=None)

    def _show_mode(self) -> None:
        """Show the colour-mapped or the composite renderers, as the mode says."""
        for mapped, rgba in self._renderers:
            mapped.visible = not self._composite
            rgba.visible = self._composite
        self._color_bar.visible = not self._composite
        mapped, rgba = self._renderers[0]
        position = ("x, y", f"$x{{0.0}}, $y{{0.0}} {self.scale_bar_unit}")
        # a composite pixel is a colour, not a value: the tooltip gives the position only
        self._hover.update(renderers=[rgba] if self._composite else [mapped],
                           tooltips=[position] if self._composite else [position, ("value", "@image")])

    def _composite_of(self, images: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """The composite of the shown channels' ``images`` (black if none is shown)."""
        shown = [c for c in range(self._shape[1]) if self._visible[c]]
        if not shown:
            black = np.zeros(shape + (4,), np.uint8)
            black[..., 3] = 255
            return black.view(np.uint32).reshape(shape)
        return composite_rgba([images[c] for c in shown], [self._colors[c] for c in shown],
                              [self._channel_limits(c) for c in shown])

    def _draw(self) -> None:
        """Push the image on screen for the current t, z and slab (projections computed once)."""
        # a patch replaces the image without bokeh comparing the old array with the new one
        if self._composite:
            T, C, Z, Y, X = self._shape
            shown = {c: self._projection(c) for c in range(C) if self._visible[c]}
            self.source.patch({"rgba": [(0, self._composite_of(shown, (Y, X)))]})
        else:
            self.source.patch({"image": [(0, self._projection(self._c))]})

    def _orthogonal_cuts(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """The XZ and YZ cuts of channel ``c`` through the crosshair."""
        y, x = self._cross
        Z = self._shape[2]
        if self._array is not None:
            volume = self._array[self._t, c]
            xz, yz = volume[:, y, :], volume[:, :, x].T
            if hasattr(xz, "compute"):
                xz, yz = xz.compute(), yz.compute()
        else:
            planes = [self._cache.plane(self._t, c, z) for z in range(Z)]
            xz = np.stack([p[y, :] for p in planes])
            yz = np.stack([p[:, x] for p in planes], axis=1)
        return np.ascontiguousarray(xz), np.ascontiguousarray(yz)

    def _render_orthogonal(self) -> None:
        T, C, Z, Y, X = self._shape
        if self._composite:
            cuts = {c: self._orthogonal_cuts(c) for c in range(C) if self._visible[c]}
            self.xz_source.data["rgba"] = [self._composite_of(
                {c: xz for c, (xz, _) in cuts.items()}, (Z, X))]
            self.yz_source.data["rgba"] = [self._composite_of(
                {c: yz for c, (_, yz) in cuts.items()}, (Y, Z))]
        else:
            xz, yz = self._orthogonal_cuts(self._c)
            self.xz_source.data["image"] = [xz]
            self.yz_source.data["image"] = [yz]
        y, x = self._cross
        uz, uy, ux, _ = self._units()
        self._vline.location = (x + 0.5) * ux
        self._hline.location = (y + 0.5) * uy

    def _apply_contrast(self) -> None:
        low, high = self._channel_limits(self._c)
        self.color_mapper.update(low=low, high=high)

    def _on_tap(self, event: Any) -> None:
        if not self._orthogonal or event.x is None or event.y is None:
            return
        _, uy, ux, _ = self._units()
        T, C, Z, Y, X = self._shape
        x = min(max(int(event.x / ux), 0), X - 1)
        y = min(max(int(event.y / uy), 0), Y - 1)
        self.set(crosshair=(y, x))

    # --- changing the view --------------------------------------------------------------

    def set(self, *, z: int | None = None, half_width: int | None = None,
            channel: int | str | None = None, t: int | None = None, palette: str | None = None,
            contrast: tuple[float, float] | str | None = None, orthogonal: bool | None = None,
            crosshair: tuple[int, int] | None = None, composite: bool | None = None) -> StackViewer:
        """Change the view; the widgets follow.

        ``contrast`` applies to the selected ``channel``; ``contrast="auto"`` recomputes its
        limits from its image. ``composite`` switches between one channel and all the
        shown channels together (see :meth:`set_channel`).

        Returns ``self``. Raises IndexError, TypeError or ValueError on invalid values,
        leaving the view unchanged.
        """
        with self._lock:
            T, C, Z, Y, X = self._shape
            new_t = self._t if t is None else self._check_index("t", t, T)
            new_c = self._c if channel is None else self._channel_index(channel)
            new_z = self._z if z is None else self._check_index("z", z, Z)
            new_hw = self._half_width if half_width is None else half_width
            slab_range(Z, new_z, new_hw)
            if palette is not None and palette not in PALETTES:
                raise ValueError(f"unknown palette {palette!r}; choose one of {', '.join(PALETTES)}")
            if contrast is not None:
                contrast = self._check_contrast(contrast)
            if crosshair is not None:
                cy, cx = (self._check_index("y", crosshair[0], Y),
                          self._check_index("x", crosshair[1], X))
            t_changed, channel_changed = new_t != self._t, new_c != self._c
            mode_changed = composite is not None and bool(composite) != self._composite
            self._change_pixels(new_t, new_c, new_z, int(new_hw), composite, contrast)
            if channel_changed or contrast is not None:
                self._apply_contrast()
            if palette is not None and palette != self._palette:
                self._palette = palette
                self.color_mapper.palette = palette_colors(palette)
            if mode_changed:
                self._show_mode()
            ortho_changed = orthogonal is not None and bool(orthogonal) != self._orthogonal
            if ortho_changed:
                self._orthogonal = bool(orthogonal)
                for item in (self.xz_figure, self.yz_figure, self._vline, self._hline):
                    item.visible = self._orthogonal
            if crosshair is not None:
                self._cross = (cy, cx)
            cuts_changed = (ortho_changed or t_changed or mode_changed or crosshair is not None
                            or (contrast is not None if self._composite else channel_changed))
            if self._orthogonal and cuts_changed:
                self._render_orthogonal()
            self._sync_widgets()
        return self

    def _change_pixels(self, t: int, c: int, z: int, half_width: int, composite: bool | None,
                       contrast: tuple[float, float] | str | None) -> None:
        """Move to new pixels and redraw what changed; if reading fails, nothing changes."""
        pixels_changed = (t, z, half_width) != (self._t, self._z, self._half_width)
        mode_changed = composite is not None and bool(composite) != self._composite
        channel_changed = c != self._c
        before = (self._t, self._c, self._z, self._half_width, self._composite,
                  self._projections, list(self._limits))
        try:  # reading pixels can fail (a closed or damaged file)
            self._t, self._c, self._z, self._half_width = t, c, z, half_width
            self._composite = self._composite if composite is None else bool(composite)
            if pixels_changed:
                self._projections = {}
            if contrast is not None:
                self._set_limits(c, contrast)
            if self._composite:
                redraw = pixels_changed or mode_changed or contrast is not None
            else:
                redraw = pixels_changed or mode_changed or channel_changed
            if redraw:
                self._draw()
        except Exception:
            (self._t, self._c, self._z, self._half_width, self._composite,
             self._projections, self._limits) = before
            raise

    def set_channel(self, channel: int | str, *, visible: bool | None = None,
                    color: Any = None, contrast: tuple[float, float] | str | None = None
                    ) -> StackViewer:
        """Change one channel of the composite: shown or hidden, colour, contrast limits.

        Parameters
        ----------
        channel : int or str
            Channel index or name.
        visible : bool, optional
            Show the channel in the composite.
        color : str or (r, g, b), optional
            ``"#rrggbb"``, a colour name or ``(r, g, b)`` with 0..255 each.
        contrast : (float, float) or "auto", optional
            The channel's contrast limits (also used when it is shown alone).

        Returns ``self``; raises on invalid values, leaving the view unchanged.
        """
        with self._lock:
            c = self._channel_index(channel)
            rgb = None if color is None else parse_color(color)
            if contrast is not None:
                contrast = self._check_contrast(contrast)
            if visible is not None:
                self._visible[c] = bool(visible)
            if rgb is not None:
                self._colors[c] = rgb
            if contrast is not None:
                self._set_limits(c, contrast)
                if c == self._c:
                    self._apply_contrast()
            if self._composite:
                self._draw()
                if self._orthogonal:
                    self._render_orthogonal()
            self._sync_widgets()
        return self

    def _set_limits(self, c: int, contrast: tuple[float, float] | str) -> None:
        if contrast == "auto":
            self._limits[c] = auto_contrast(self._projection(c))
            self._stale.add(c)  # the slider's bounds follow the new data
        else:
            self._limits[c] = contrast

    # --- widgets ------------------------------------------------------------------------

    @property
    def widget(self) -> Any:
        """ipywidgets.VBox : Controls above the bokeh view (built on first use)."""
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _contrast_bounds(self, c: int) -> tuple[float, float]:
        low, high = self._channel_limits(c)
        image = self._projections.get(c)
        if image is not None:
            low, high = min(low, float(np.nanmin(image))), max(high, float(np.nanmax(image)))
        return low, (high if high > low else low + 1.0)

    def _build_widget(self) -> Any:
        import ipywidgets as W

        T, C, Z, Y, X = self._shape
        self._updating = False
        self.z_slider = W.IntSlider(value=self._z, min=0, max=max(Z - 1, 0), description="z",
                                    continuous_update=True, disabled=Z == 1,
                                    layout=W.Layout(width="420px"))
        self.slab_slider = W.IntSlider(value=self._half_width, min=0, max=max(Z - 1, 0),
                                       description="slab ±", disabled=Z == 1,
                                       tooltip="planes on each side of z projected by maximum",
                                       layout=W.Layout(width="420px"))
        self.t_slider = W.IntSlider(value=self._t, min=0, max=max(T - 1, 0), description="t",
                                    layout=W.Layout(width="420px", display="" if T > 1 else "none"))
        self.channel_picker = W.Dropdown(options=[(n, i) for i, n in enumerate(self.channel_names)],
                                         value=self._c, description="channel",
                                         layout=W.Layout(width="220px"))
        self.palette_picker = W.Dropdown(options=list(PALETTES), value=self._palette,
                                         description="palette", layout=W.Layout(width="220px"))
        self.composite_box = W.Checkbox(value=self._composite, description="composite",
                                        indent=False, tooltip="all channels together, each in "
                                        "its colour", layout=W.Layout(width="100px",
                                                                      display="" if C > 1 else "none"))
        low, high = self._contrast_bounds(self._c)
        self.contrast_slider = W.FloatRangeSlider(
            value=self._channel_limits(self._c), min=low, max=high,
            step=max((high - low) / 1000, 1e-6), description="contrast", readout_format=".4g",
            continuous_update=False, layout=W.Layout(width="420px"))
        self.auto_button = W.Button(description="auto", tooltip="contrast from percentiles "
                                    f"{AUTO_PERCENTILES[0]}-{AUTO_PERCENTILES[1]}",
                                    layout=W.Layout(width="60px"))
        self.contrast_row = W.HBox([self.contrast_slider, self.auto_button])
        self.ortho_box = W.Checkbox(value=self._orthogonal, description="XZ / YZ views",
                                    indent=False, layout=W.Layout(width="140px"))
        self._build_channel_panel()
        self.info = W.HTML()
        self.bokeh = bokeh_widget(self.layout)
        watch = self._watch
        watch(self.z_slider, lambda v: self.set(z=v))
        watch(self.slab_slider, lambda v: self.set(half_width=v))
        watch(self.t_slider, lambda v: self.set(t=v))
        watch(self.channel_picker, lambda v: self.set(channel=v))
        watch(self.palette_picker, lambda v: self.set(palette=v))
        watch(self.contrast_slider, lambda v: self.set(contrast=tuple(v)))
        watch(self.ortho_box, lambda v: self.set(orthogonal=v))
        watch(self.composite_box, lambda v: self.set(composite=v))
        self.auto_button.on_click(lambda _: self.set(contrast="auto"))
        controls = W.VBox([
            W.HBox([self.channel_picker, self.palette_picker, self.composite_box, self.ortho_box]),
            self.z_slider, self.slab_slider, self.t_slider, self.contrast_row, self.channel_panel,
        ])
        box = W.VBox([controls, self.bokeh, self.info])
        self._sync_widgets(force=True)
        return box

    def _watch(self, widget: Any, apply: Any) -> None:
        """Call ``apply(new value)`` when the user changes ``widget`` (not when we sync it)."""
        def handler(change: dict) -> None:
            if not self._updating:
                apply(change["new"])
        widget.observe(handler, names="value")

    def _build_channel_panel(self) -> None:
        """One compact row per channel (for 2+ channels); past seven rows the panel scrolls."""
        import ipywidgets as W

        C = self._shape[1]
        self.channel_controls = [_ChannelControls(name, color_hex(rgb), 300)
                                 for name, rgb in zip(self.channel_names, self._colors, strict=True)
                                 ] if C > 1 else []
        self.channel_panel = W.VBox([row.box for row in self.channel_controls],
                                    layout=W.Layout(max_height="216px", overflow="hidden auto",
                                                    width="580px", flex_flow="column nowrap"))
        self.channel_panel.add_class("autotx-channel-panel")
        self._panel_synced = False  # its sliders get their bounds when first shown
        for c, row in enumerate(self.channel_controls):
            self._watch(row.visible, lambda v, c=c: self.set_channel(c, visible=v))
            self._watch(row.color, lambda v, c=c: self.set_channel(c, color=v))
            self._watch(row.contrast, lambda v, c=c: self.set_channel(c, contrast=tuple(v)))
            row.auto.on_click(lambda _, c=c: self.set_channel(c, contrast="auto"))

    def _sync_contrast_slider(self, slider: Any, c: int, force: bool) -> None:
        """Set a contrast slider to channel ``c``'s limits, its bounds to the data's range."""
        low, high = self._channel_limits(c)
        if force or low < slider.min or high > slider.max or c in self._stale:
            bounds = self._contrast_bounds(c)
            # widen first, so that the value never falls outside during the update
            slider.min = min(bounds[0], slider.min)
            slider.max = max(bounds[1], slider.max)
            slider.value = (low, high)
            slider.min, slider.max = bounds
            slider.step = max((bounds[1] - bounds[0]) / 1000, 1e-6)
        slider.value = (low, high)

    def _sync_widgets(self, force: bool = False) -> None:
        if self._widget is None and not force:
            return
        self._updating = True
        try:
            T, C, Z, Y, X = self._shape
            self.z_slider.value = self._z
            self.slab_slider.value = self._half_width
            self.t_slider.value = self._t
            self.channel_picker.value = self._c
            self.palette_picker.value = self._palette
            self.composite_box.value = self._composite
            single = "none" if self._composite else ""
            self.channel_picker.layout.display = single
            self.palette_picker.layout.display = single
            self.contrast_row.layout.display = single
            self.channel_panel.layout.display = "" if self._composite and C > 1 else "none"
            self._sync_contrast_slider(self.contrast_slider, self._c, force)
            if self._composite:  # the rows of hidden panels wait until shown (no reads)
                for c, row in enumerate(self.channel_controls):
                    row.visible.value = self._visible[c]
                    row.color.value = color_hex(self._colors[c])
                    self._sync_contrast_slider(row.contrast, c, force or not self._panel_synced)
                self._panel_synced = True
            self._stale.clear()
            self.ortho_box.value = self._orthogonal
            self.info.value = self._info_line()
        finally:
            self._updating = False

    def _info_line(self) -> str:
        T, C, Z, Y, X = self._shape
        start, stop = slab_range(Z, self._z, self._half_width)
        shown = f"plane {self._z}" if stop - start == 1 else f"max of planes {start}..{stop - 1}"
        pz, py, px = self.pixel_sizes
        size = (f"{px:.4g} x {py:.4g} x {pz or float('nan'):.4g} µm (x, y, z)"
                if px and py else "pixel size unknown")
        what = (f"composite of {sum(self._visible)}/{C} channels" if self._composite
                else html.escape(self.channel_names[self._c]))
        return f"<b>{what}</b>, z {self._z + 1}/{Z}: {shown}; {X} x {Y} px, {self.dtype}; {size}"

    def close(self) -> None:
        """Close the widgets (the image, if any, stays open: it is the caller's)."""
        if self._widget is not None:
            for row in self.channel_controls:
                row.close()
            for widget in (self.z_slider, self.slab_slider, self.t_slider, self.channel_picker,
                           self.palette_picker, self.composite_box, self.contrast_slider,
                           self.auto_button, self.contrast_row, self.ortho_box,
                           self.channel_panel, self.info, self.bokeh, self._widget):
                widget.close()
            self._widget = None


def view_stack(image_or_array: Any, channel: int | str | None = None, **options: Any) -> StackViewer:
    """Show a z-stack: ``view_stack(img).widget`` in a notebook cell.

    Parameters
    ----------
    image_or_array : Image, ndarray or dask array
        See :class:`StackViewer`.
    channel : int or str, optional
        Channel to show first (alone, unless ``composite=True``).
    **options
        Other :class:`StackViewer` parameters (``z``, ``half_width``, ``palette``,
        ``contrast``, ``orthogonal``, ``pixel_sizes``, ``t``, ``width``, ``composite``,
        ``colors``).

    Returns
    -------
    viewer : StackViewer
    """
    return StackViewer(image_or_array, channel=channel, **options)
