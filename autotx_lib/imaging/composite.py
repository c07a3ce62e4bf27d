"""Channel colours and additive colour composites of several channels (pure numpy).

A composite shows several channels at once, as a fluorescence microscope's software
does: each channel is scaled between its own contrast limits, tinted with its colour,
and the tinted images are added (each colour component saturating at full brightness).
:func:`composite_rgba` returns packed RGBA pixels, the layout bokeh's ``image_rgba``
glyph draws.

Channel colours come from the file where it says (:func:`image_channel_colors`), else
from the emission wavelength (:func:`wavelength_color`), else from
:data:`FALLBACK_COLOURS` by channel index.

Examples
--------
>>> import numpy as np
>>> red_and_green = composite_rgba(
...     [np.array([[0, 100]], np.uint16), np.array([[100, 100]], np.uint16)],
...     colors=[(255, 0, 0), (0, 255, 0)], limits=[(0, 100), (0, 100)])
>>> red_and_green.view(np.uint8).reshape(1, 2, 4).tolist()
[[[0, 255, 0, 255], [255, 255, 0, 255]]]
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]

#: Colours by channel index when the file names none (Fiji's composite order), for up
#: to seven channels (see :func:`fallback_color` for more).
FALLBACK_COLOURS: tuple[RGB, ...] = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 255, 255), (255, 0, 255),
    (255, 255, 0),
)

#: Colour names :func:`parse_color` accepts (besides ``#rrggbb``).
NAMED_COLOURS: dict[str, RGB] = {
    "gray": (255, 255, 255), "grey": (255, 255, 255), "white": (255, 255, 255),
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "cyan": (0, 255, 255),
    "magenta": (255, 0, 255), "yellow": (255, 255, 0), "orange": (255, 128, 0),
}


def parse_color(value: Any) -> RGB:
    """An ``(r, g, b)`` tuple of 0..255 from ``"#rrggbb"``, ``"#rgb"``, a name or a tuple.

    Examples
    --------
    >>> parse_color("#ff8000"), parse_color("#0f0"), parse_color("Magenta"), parse_color((1, 2, 3))
    ((255, 128, 0), (0, 255, 0), (255, 0, 255), (1, 2, 3))
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in NAMED_COLOURS:
            return NAMED_COLOURS[text]
        digits = text[1:] if text.startswith("#") else ""
        if len(digits) == 3:
            digits = "".join(d * 2 for d in digits)
        try:
            if len(digits) == 6:
                return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        except ValueError:
            pass
    elif isinstance(value, Sequence) and len(value) == 3 and all(
            isinstance(v, int | np.integer) and 0 <= v <= 255 for v in value):
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    raise ValueError(f"cannot read {value!r} as a colour; give '#rrggbb', one of "
                     f"{', '.join(sorted(NAMED_COLOURS))}, or (r, g, b) with 0..255 each")


def color_hex(rgb: RGB) -> str:
    """``"#rrggbb"`` of an ``(r, g, b)`` tuple.

    Examples
    --------
    >>> color_hex((255, 128, 0))
    '#ff8000'
    """
    return "#{:02x}{:02x}{:02x}".format(*rgb)


#: Emission wavelength (nm) -> hue (degrees) anchors of :func:`wavelength_color`: the
#: colours microscope software conventionally gives the common dyes (DAPI blue, GFP and
#: FITC green, Cy3 and TRITC orange, mCherry red, Cy5 and beyond magenta), which spread
#: the visible spectrum's crowded yellows so that neighbouring dyes look different.
WAVELENGTH_HUES = ((400, 270), (460, 235), (490, 180), (520, 120), (550, 75), (570, 30),
                   (610, 10), (650, 0), (700, -60))


def wavelength_color(nanometres: float) -> RGB:
    """A display colour for a channel's emission wavelength, at full brightness.

    The hue is interpolated between :data:`WAVELENGTH_HUES`: violet at 400 nm and below,
    blue, cyan, green, orange, red, and magenta at 700 nm and beyond (far red and
    infrared, which the eye does not see, are shown magenta as usual).

    Examples
    --------
    >>> wavelength_color(461), wavelength_color(519), wavelength_color(570), wavelength_color(750)
    ((0, 29, 255), (0, 255, 8), (255, 128, 0), (255, 0, 255))
    """
    nm = float(nanometres)
    if not np.isfinite(nm) or nm <= 0:
        raise ValueError(f"wavelength {nanometres!r} nm must be a positive number")
    anchors, hues = zip(*WAVELENGTH_HUES, strict=True)
    hue = float(np.interp(nm, anchors, hues)) % 360
    return tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue / 360, 1.0, 1.0))  # type: ignore[return-value]


def fallback_color(index: int, n_channels: int) -> RGB:
    """The colour of channel ``index`` of ``n_channels`` when nothing better is known.

    Up to seven channels take :data:`FALLBACK_COLOURS` in order. More channels are
    usually a spectral sweep, ordered by wavelength: they run through the spectrum from
    violet (the first) to red (the last).

    Examples
    --------
    >>> fallback_color(0, 2), fallback_color(1, 2), fallback_color(0, 20), fallback_color(19, 20)
    ((255, 0, 0), (0, 255, 0), (128, 0, 255), (255, 0, 0))
    """
    if not 0 <= index < n_channels:
        raise IndexError(f"channel {index} is out of range for {n_channels} channels")
    if n_channels <= len(FALLBACK_COLOURS):
        return FALLBACK_COLOURS[index]
    hue = 0.75 * (1 - index / (n_channels - 1))
    return tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, 1.0, 1.0))  # type: ignore[return-value]


def channel_colors(n_channels: int, *, colors: Sequence[Any | None] | None = None,
                   wavelengths: Sequence[float | None] | None = None) -> list[RGB]:
    """One colour per channel: the given colour, else the wavelength's, else by index.

    Parameters
    ----------
    n_channels : int
        Number of channels.
    colors : sequence, optional
        A colour (anything :func:`parse_color` reads) or None per channel.
    wavelengths : sequence of float or None, optional
        Emission wavelength in nm (or None) per channel.

    Returns
    -------
    colours : list of (r, g, b)

    Examples
    --------
    >>> channel_colors(3, colors=[None, "#00ff00", None], wavelengths=[461, None, None])
    [(0, 29, 255), (0, 255, 0), (0, 0, 255)]
    """
    for name, given in (("colors", colors), ("wavelengths", wavelengths)):
        if given is not None and len(given) != n_channels:
            raise ValueError(f"{name} has {len(given)} entries for {n_channels} channels; "
                             "give one per channel (None where unknown)")
    result = []
    for c in range(n_channels):
        if colors is not None and colors[c] is not None:
            result.append(parse_color(colors[c]))
        elif wavelengths is not None and wavelengths[c] is not None:
            result.append(wavelength_color(wavelengths[c]))
        else:
            result.append(fallback_color(c, n_channels))
    return _spread_sweep(result, colors, wavelengths)


def _spread_sweep(result: list[RGB], colors: Sequence[Any | None] | None,
                  wavelengths: Sequence[float | None] | None) -> list[RGB]:
    """A spectral (lambda) sweep: many neighbouring wavelengths share a colour, so spread
    them over the spectrum in wavelength order instead (every channel stays distinct)."""
    if wavelengths is None:
        return result
    by_wavelength = [c for c, nm in enumerate(wavelengths)
                     if nm is not None and (colors is None or colors[c] is None)]
    if len(by_wavelength) <= 7 or \
            len({result[c] for c in by_wavelength}) == len(by_wavelength):
        return result
    ordered = sorted(by_wavelength, key=lambda c: wavelengths[c])
    for rank, c in enumerate(ordered):
        result[c] = fallback_color(rank, len(ordered))
    return result


def image_channel_colors(image: Any) -> list[RGB]:
    """Colours for the channels of an opened image (current scene), from its metadata.

    The OME channel ``Color`` where the file sets one (ignored when it is black, or the
    same for every channel of a multi-channel image: that says nothing), else the
    emission (or excitation) wavelength (from ``image.channels`` where the reader gives
    them, else from the OME metadata), else :func:`fallback_color` by index.

    Parameters
    ----------
    image : autotx_lib.imaging.readers.Image

    Returns
    -------
    colours : list of (r, g, b)
    """
    n = int(image.dims.C)
    colors: list[Any | None] = [None] * n
    wavelengths: list[float | None] = [None] * n
    try:
        ome = image.ome_metadata
        channels = ome.images[image.current_scene_index].pixels.channels if ome else []
    except Exception as error:  # noqa: BLE001 - a nicety here: the pixels still show
        logger.debug("no OME channel colours for %s: %s", getattr(image, "path", image), error)
        channels = []
    if len(channels) == n:
        for c, channel in enumerate(channels):
            if "color" in channel.model_fields_set and channel.color is not None:
                r, g, b = (int(v) for v in channel.color.as_rgb_tuple(alpha=False))
                colors[c] = None if (r, g, b) == (0, 0, 0) else (r, g, b)
            nm = channel.emission_wavelength or channel.excitation_wavelength
            wavelengths[c] = float(nm) if nm else None
        if n > 1 and len({c for c in colors if c is not None}) == 1 and None not in colors:
            colors = [None] * n  # every channel the same colour (a writer's default)
    # the readers' own wavelengths (in nm, from every backend), where the image has them
    described = getattr(image, "channels", None)
    if isinstance(described, Sequence) and len(described) == n:
        for c, channel in enumerate(described):
            nm = getattr(channel, "emission_nm", None) or getattr(channel, "excitation_nm", None)
            if nm:
                wavelengths[c] = float(nm)
    return channel_colors(n, colors=colors, wavelengths=wavelengths)


# --- the composite ----------------------------------------------------------------------


def _channel_rgba(image: np.ndarray, color: RGB, low: float, high: float) -> np.ndarray:
    """``(Y, X, 4)`` uint8: the image scaled between its limits, tinted; alpha 0."""
    lut = np.zeros((256, 4), np.uint8)  # scaled level 0..255 -> colour
    lut[:, :3] = (np.arange(256)[:, None] * np.asarray(color)[None, :] + 127) // 255
    if image.dtype in (np.uint8, np.uint16):
        # one gather through a table over every possible value: no float pass per pixel
        values = np.arange(np.iinfo(image.dtype).max + 1, dtype=np.float32)
        levels = _levels(values, low, high)
        packed = lut[levels].view(np.uint32)[:, 0]
        tinted = packed[np.ascontiguousarray(image)]  # the result takes the index's layout
        return tinted.view(np.uint8).reshape(image.shape + (4,))
    levels = _levels(np.asarray(image, np.float32), low, high)
    return lut[levels]


def _levels(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 0..255 from ``values`` scaled linearly, ``low`` -> 0 and ``high`` -> 255."""
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    np.clip(scaled, 0, 255, out=scaled)
    scaled = np.nan_to_num(scaled, copy=False, nan=0.0)
    return (scaled + 0.5).astype(np.uint8)


def composite_rgba(images: Sequence[np.ndarray], colors: Sequence[Any],
                   limits: Sequence[tuple[float, float]]) -> np.ndarray:
    """Additive colour composite of several channels, as packed RGBA pixels.

    Parameters
    ----------
    images : sequence of (Y, X) ndarray
        One image per channel, all the same shape; any integer or float dtype.
    colors : sequence
        One colour per image (anything :func:`parse_color` reads).
    limits : sequence of (low, high)
        Contrast limits per image: ``low`` and below is black, ``high`` and above is the
        full colour.

    Returns
    -------
    rgba : (Y, X) ndarray of uint32
        Each pixel's bytes are R, G, B, A in memory (A = 255), the layout of bokeh's
        ``image_rgba``; ``rgba.view(np.uint8).reshape(Y, X, 4)`` gives the components.

    Raises
    ------
    ValueError
        If there is no image, the counts or shapes differ, or a limit has ``low >= high``.
    """
    if not images:
        raise ValueError("a composite needs at least one channel image")
    if not len(images) == len(colors) == len(limits):
        raise ValueError(f"{len(images)} images, {len(colors)} colours and {len(limits)} "
                         "contrast limits: give one of each per channel")
    shape = np.shape(images[0])
    if len(shape) != 2 or any(np.shape(image) != shape for image in images):
        raise ValueError(f"channel images must be 2-D and of one shape, got "
                         f"{[np.shape(image) for image in images]}")
    total = None
    for image, color, (low, high) in zip(images, colors, limits, strict=True):
        if not float(low) < float(high):
            raise ValueError(f"contrast limits ({low}, {high}) must have low < high")
        tinted = _channel_rgba(np.asarray(image), parse_color(color), float(low), float(high))
        if total is None:
            total = tinted.astype(np.uint16)
        else:
            np.add(total, tinted, out=total)
    np.minimum(total, 255, out=total)
    rgba = total.astype(np.uint8)
    rgba[..., 3] = 255
    return rgba.view(np.uint32).reshape(shape)
