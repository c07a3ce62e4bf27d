"""The reader ABC: a backend writes a handful of hooks, the base derives the rest.

A backend (``tiff.py``, ``nd2.py``, ``bioformats.py``...) subclasses :class:`Image` and
implements four hooks:

``_open()``
    Open the file, raise on anything it cannot handle (the registry then tries the next
    backend). Called once by ``__init__``.
``_scene_list()``
    ``[(id, name), ...]`` for every scene.
``_scene_sizes(index)`` and ``_scene_dtype(index)``
    ``{"T":..,"C":..,"Z":..,"Y":..,"X":..}`` and the numpy dtype of one scene.
``_read_plane(scene, t, c, z)``
    One 2-D ``(Y, X)`` plane of one scene, in the file's own dtype.

Optional hooks have defaults: ``_physical_pixel_sizes``, ``_channel_names``, ``_ome_xml``,
``_raw_metadata``, ``_plate``, ``_close``. The base validates indices, serialises calls to
the backend with a lock (so dask threads can share one file handle), caches, and derives
:attr:`Image.dims`, :meth:`Image.plane`, :attr:`Image.data`, :attr:`Image.dask_data`,
scene selection, metadata parsing and the plate layout.
"""

from __future__ import annotations

import threading
import warnings
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autotx_lib._optional import require
from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.ome_xml import OmeImage, OmeSummary, summarize_ome
from autotx_lib.imaging.readers.types import (
    DIMENSION_ORDER,
    Channel,
    Dimensions,
    ImageMetadata,
    Objective,
    PhysicalPixelSizes,
    PlateInfo,
    Scene,
)


class MetadataWarning(UserWarning):
    """A part of a file's metadata could not be read; pixels and the other parts still can.

    The message names the file, the part (``"OME-XML"``, ``"channel names"``...) and why.
    Every such problem is also listed in :attr:`Image.metadata_problems`.
    """


class BackendRefusal(ReaderError):
    """A backend declines a valid file it does not handle (an unusual axis, RGB, a mosaic).

    Unlike other failures, a refusal never suggests the file is damaged: the registry
    moves on to the next backend (in the end Bio-Formats).
    """


class Image(ABC):
    """An opened microscopy image: scenes of ``TCZYX`` planes, read lazily.

    Use :func:`autotx_lib.imaging.readers.open_image` to get one; it picks the backend.
    Names follow bioio (``dims``, ``scenes``, ``set_scene``, ``physical_pixel_sizes``,
    ``channel_names``, ``data``, ``dask_data``).

    Parameters
    ----------
    path : str or Path
        The file to open.

    Attributes
    ----------
    path : Path
        The file.
    backend : str
        Name of the backend reading it (class attribute ``name``).

    Examples
    --------
    >>> import numpy as np
    >>> from autotx_lib.imaging.readers import ArrayReader
    >>> img = ArrayReader(np.zeros((2, 1, 3, 4, 5), np.uint16))
    >>> img.dims.shape, img.plane(t=1, z=2).shape
    ((2, 1, 3, 4, 5), (4, 5))
    """

    #: Backend name used by the registry and in error messages.
    name: ClassVar[str] = "abstract"
    #: File-name suffixes this backend claims, lower case without the leading dot.
    extensions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        self.options = dict(options)
        self._lock = threading.RLock()
        self._scene_index = 0
        self._sizes_cache: dict[int, Dimensions] = {}
        self._dtype_cache: dict[int, np.dtype] = {}
        self._data_cache: dict[int, np.ndarray] = {}
        self._metadata_cache: ImageMetadata | None = None
        self._ome_text_cache: tuple[str | None] | None = None
        self._ome_summary_cache: OmeSummary | None = None
        self._plate_cache: tuple[PlateInfo | None] | None = None
        self._closed = False
        #: One line per metadata part that could not be read (also warned, see MetadataWarning).
        self.metadata_problems: list[str] = []
        self._open()
        scenes = self._scene_list()
        if not scenes:
            raise ReaderError(self.path, {self.name: "the file holds no image (no scene)"},
                              "check it is the image file, not a settings or metadata file")
        self._scenes = tuple(
            Scene(index=i, id=str(sid), name=str(sname or "")) for i, (sid, sname) in enumerate(scenes)
        )
        self.dims  # noqa: B018 - validate scene 0 eagerly, so a bad file fails at open

    # --- hooks --------------------------------------------------------------------------

    def _open(self) -> None:  # noqa: B027 - optional hook
        """Open the file; raise if this backend cannot read it."""

    @abstractmethod
    def _scene_list(self) -> list[tuple[str, str]]:
        """Return ``[(id, name), ...]`` for every scene."""

    @abstractmethod
    def _scene_sizes(self, scene: int) -> dict[str, int]:
        """Return the sizes of ``T, C, Z, Y, X`` of one scene."""

    @abstractmethod
    def _scene_dtype(self, scene: int) -> np.dtype:
        """Return the pixel dtype of one scene."""

    @abstractmethod
    def _read_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        """Return one ``(Y, X)`` plane; indices are already validated."""

    def _physical_pixel_sizes(self, scene: int) -> PhysicalPixelSizes:
        """Voxel size in micrometres; default: from the OME metadata, else unknown."""
        image = self._ome_image(scene)
        return image.pixel_sizes if image is not None else PhysicalPixelSizes(None, None, None)

    def _channel_names(self, scene: int) -> list[str] | None:
        """Channel names; default: from the OME metadata, else None (the base numbers them)."""
        image = self._ome_image(scene)
        if image is not None and len(image.channel_names) == self._dims(scene).C \
                and all(image.channel_names):
            return image.channel_names
        return None

    def _ome_image(self, scene: int) -> OmeImage | None:
        """The OME ``Image`` essentials of a scene (see :mod:`.ome_xml`), or None."""
        images = self._ome_summary().images
        return images[scene] if scene < len(images) else None

    def _channel_wavelengths(self, scene: int) -> list[tuple[float | None, float | None]] | None:
        """``[(excitation_nm, emission_nm), ...]`` per channel; default: from the OME metadata."""
        image = self._ome_image(scene)
        if image is None or len(image.wavelengths) != self._dims(scene).C:
            return None
        return image.wavelengths

    def _acquisition_time(self, scene: int) -> datetime | None:
        """When the scene was acquired; default: the OME ``AcquisitionDate``."""
        image = self._ome_image(scene)
        return None if image is None else image.acquisition_time

    def _objective(self, scene: int) -> Objective | None:
        """The objective; default: the OME Objective the image refers to (or the only one)."""
        image = self._ome_image(scene)
        return None if image is None else image.objective

    def _time_increment(self, scene: int) -> float | None:
        """Seconds between time points; default: the OME ``TimeIncrement``."""
        image = self._ome_image(scene)
        return None if image is None else image.time_increment

    def _scan_axes(self, scene: int) -> str:
        """What the Z, Y and X axes of the array are physically; ``"ZYX"`` but for scans."""
        return "ZYX"

    def _ome_xml(self) -> str | None:
        """The file's OME-XML, if it has (or the backend can make) one."""
        return None

    def _raw_metadata(self) -> Any:
        """The backend's own metadata object."""
        return None

    def _plate(self) -> PlateInfo | None:
        """Plate layout; default: from the OME metadata's first Plate."""
        from autotx_lib.imaging.readers.plate import plate_from_ome

        if not self._ome_summary().has_plate:  # spares the full OME model for most files
            return None
        ome = self.ome_metadata
        if ome is None:
            return None
        return plate_from_ome(ome, [s.id for s in self._scenes])

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    # --- scenes -------------------------------------------------------------------------

    @property
    def scenes(self) -> tuple[Scene, ...]:
        """tuple of Scene : Every scene of the file (``index``, ``id``, ``name``)."""
        return self._scenes

    @property
    def current_scene(self) -> Scene:
        """Scene : The scene that ``dims``, ``plane()``, ``data``... refer to."""
        return self._scenes[self._scene_index]

    @property
    def current_scene_index(self) -> int:
        """int : Index of :attr:`current_scene`."""
        return self._scene_index

    def set_scene(self, scene: int | str | Scene) -> Image:
        """Select the scene that the other members refer to.

        Parameters
        ----------
        scene : int, str or Scene
            Index, id (``"Image:1"``) or name of the scene.

        Returns
        -------
        image : Image
            ``self``, so calls chain: ``img.set_scene(1).data``.

        Raises
        ------
        IndexError
            If an index is out of range.
        ValueError
            If no scene has that id or name.
        """
        if isinstance(scene, Scene):
            scene = scene.index
        if isinstance(scene, bool) or not isinstance(scene, int | str | np.integer):
            raise TypeError(f"scene must be an index, an id or a name, not {type(scene).__name__}")
        if isinstance(scene, int | np.integer):
            if not 0 <= int(scene) < len(self._scenes):
                raise IndexError(
                    f"scene index {scene} is out of range: {self.path.name} has "
                    f"{len(self._scenes)} scene(s), valid indices 0..{len(self._scenes) - 1}"
                )
            self._scene_index = int(scene)
            return self
        for s in self._scenes:
            if scene in (s.id, s.name):
                self._scene_index = s.index
                return self
        raise ValueError(
            f"scene {scene!r} is not present in {self.path.name}; available scenes: "
            + ", ".join(repr(str(s)) for s in self._scenes)
        )

    # --- shape --------------------------------------------------------------------------

    def _dims(self, scene: int) -> Dimensions:
        if scene not in self._sizes_cache:
            with self._lock:
                sizes = self._scene_sizes(scene)
            bad = {k: v for k, v in sizes.items() if not isinstance(v, int | np.integer) or v < 1}
            missing = [axis for axis in DIMENSION_ORDER if axis not in sizes]
            if bad or missing:
                raise ReaderError(
                    self.path,
                    {self.name: f"scene {scene} has invalid sizes {sizes} (missing {missing})"},
                    "the file's metadata is inconsistent; try backend='bioformats'",
                )
            self._sizes_cache[scene] = Dimensions(**{a: int(sizes[a]) for a in DIMENSION_ORDER})
        return self._sizes_cache[scene]

    def _dtype_of(self, scene: int) -> np.dtype:
        if scene not in self._dtype_cache:
            with self._lock:
                self._dtype_cache[scene] = np.dtype(self._scene_dtype(scene))
        return self._dtype_cache[scene]

    @property
    def dims(self) -> Dimensions:
        """Dimensions : Sizes of the current scene, ``TCZYX`` order."""
        return self._dims(self._scene_index)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """tuple of int : ``(T, C, Z, Y, X)`` of the current scene."""
        return self.dims.shape

    @property
    def dtype(self) -> np.dtype:
        """numpy.dtype : Pixel type of the current scene, as stored in the file (never rescaled)."""
        return self._dtype_of(self._scene_index)

    # --- metadata -----------------------------------------------------------------------

    @property
    def physical_pixel_sizes(self) -> PhysicalPixelSizes:
        """PhysicalPixelSizes : ``(Z, Y, X)`` in micrometres; ``None`` where unknown."""
        return self._physical_pixel_sizes(self._scene_index)

    @property
    def channel_names(self) -> list[str]:
        """list of str : One name per channel; ``"C:0"``, ``"C:1"``... where the file has none."""
        names = self._channel_names(self._scene_index)
        if not names or len(names) != self.dims.C:
            return [f"C:{i}" for i in range(self.dims.C)]
        return [str(n) for n in names]

    @property
    def channels(self) -> list[Channel]:
        """list of Channel : Name and excitation/emission wavelengths (nm) of each channel."""
        names = self.channel_names
        waves = self._channel_wavelengths(self._scene_index) or []
        if len(waves) != len(names):
            waves = [(None, None)] * len(names)
        return [Channel(name, ex, em) for name, (ex, em) in zip(names, waves, strict=True)]

    @property
    def acquisition_time(self) -> datetime | None:
        """datetime or None : When the current scene was acquired, as the file records it."""
        return self._acquisition_time(self._scene_index)

    @property
    def objective(self) -> Objective | None:
        """Objective or None : The objective lens of the current scene, where the file says."""
        return self._objective(self._scene_index)

    @property
    def time_increment(self) -> float | None:
        """float or None : Seconds between time points (between rows for an ``"ZTX"`` scan)."""
        return self._time_increment(self._scene_index)

    @property
    def scan_axes(self) -> str:
        """str : What the array's Z, Y and X axes are physically, as three letters.

        ``"ZYX"`` for ordinary images. A Leica XZ scan is ``"YZX"``: a plane's rows are depth
        (physical Z) and the Z index, if any, steps along Y. A line scan over time (XT) is
        ``"ZTX"``: rows are successive times, :attr:`time_increment` apart.
        :attr:`physical_pixel_sizes` always gives physical Z, Y and X spacings, so the rows
        of an XZ plane are ``physical_pixel_sizes.Z`` apart; :attr:`plane_pixel_size` picks
        the right ones for drawing a plane.
        """
        return self._scan_axes(self._scene_index)

    @property
    def array_pixel_sizes(self) -> PhysicalPixelSizes:
        """PhysicalPixelSizes : Spacing along the array's Z, Y, X axes in micrometres.

        The same as :attr:`physical_pixel_sizes` for ordinary images; for a scan it follows
        :attr:`scan_axes` (an XZ plane's ``Y`` is its depth spacing; a time axis is None).
        Use it to draw planes and scale bars.
        """
        sizes = self.physical_pixel_sizes._asdict()
        return PhysicalPixelSizes(*(sizes.get(axis) for axis in self.scan_axes))

    @property
    def plane_pixel_size(self) -> tuple[float | None, float | None]:
        """tuple : ``(rows, columns)`` spacing of a plane in micrometres (None: time or unknown)."""
        sizes = self.array_pixel_sizes
        return sizes.Y, sizes.X

    @property
    def metadata(self) -> ImageMetadata:
        """ImageMetadata : ``ome`` (ome-types model or None), ``ome_xml`` (text) and ``raw``."""
        if self._metadata_cache is None:
            xml = self._ome_text()
            with self._lock:
                raw = self._raw_metadata()
            ome = None
            if xml:
                ome_types = require("ome_types", "to parse OME-XML metadata")
                try:
                    with warnings.catch_warnings():  # ome-types fixes up vendor ids noisily
                        warnings.simplefilter("ignore")
                        ome = ome_types.from_xml(xml, validate=False)
                except ImportError as error:  # lxml, needed for older OME schemas (2015-01)
                    self.report_metadata_problem("OME-XML", (
                        f"{error}; install the imaging extra: "
                        'python -m pip install "autotx_lib[imaging]"'))
                except Exception as error:  # non-conforming OME-XML: the raw text stays
                    self.report_metadata_problem("OME-XML", error)
            self._metadata_cache = ImageMetadata(ome=ome, ome_xml=xml, raw=raw)
        return self._metadata_cache

    def _ome_text(self) -> str | None:
        """The OME-XML text, asked of the backend once."""
        if self._ome_text_cache is None:
            with self._lock:
                self._ome_text_cache = (self._ome_xml(),)
        return self._ome_text_cache[0]

    def _ome_summary(self) -> OmeSummary:
        """The OME essentials (cheap; see :mod:`.ome_xml`), parsed once."""
        if self._ome_summary_cache is None:
            summary, xml = OmeSummary(), self._ome_text()
            if xml:
                try:
                    summary = summarize_ome(xml)
                except Exception as error:  # malformed: the parts it holds are unknown
                    self.report_metadata_problem("OME-XML", error)
                for part, why in summary.problems:
                    self.report_metadata_problem(part, why)
            self._ome_summary_cache = summary
        return self._ome_summary_cache

    def report_metadata_problem(self, part: str, error: BaseException | str) -> None:
        """Record and warn that one part of the metadata could not be read.

        Backends call this instead of swallowing an exception: the image stays usable,
        the user learns what is missing and why.

        Parameters
        ----------
        part : str
            What could not be read, e.g. ``"OME-XML"``, ``"channel names"``.
        error : BaseException or str
            Why.
        """
        why = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        why = (why.strip().splitlines() or [""])[0]
        message = f"{self.path}: the {part} could not be read ({why}); shown as unknown"
        if not any(p.startswith(f"{self.path}: the {part} ") for p in self.metadata_problems):
            self.metadata_problems.append(message)
            warnings.warn(message, MetadataWarning, stacklevel=3)

    @property
    def ome_metadata(self) -> Any:
        """ome_types.OME or None : Shortcut for ``metadata.ome`` (bioio's name)."""
        return self.metadata.ome

    @property
    def plate(self) -> PlateInfo | None:
        """PlateInfo or None : Plate, wells and the scene index of each field, for HCS files."""
        if self._plate_cache is None:
            self._plate_cache = (self._plate(),)
        return self._plate_cache[0]

    # --- pixels -------------------------------------------------------------------------

    def _checked_plane(self, scene: int, t: int, c: int, z: int) -> np.ndarray:
        dims = self._dims(scene)
        for axis, index in (("T", t), ("C", c), ("Z", z)):
            size = dims[axis]
            if isinstance(index, bool) or not isinstance(index, int | np.integer):
                raise TypeError(f"{axis.lower()} must be an int, not {type(index).__name__}")
            if not 0 <= index < size:
                raise IndexError(
                    f"{axis.lower()}={index} is out of range for scene {scene} of "
                    f"{self.path.name} ({axis}={size}; valid 0..{size - 1})"
                )
        if self._closed:
            raise ReaderError(self.path, {self.name: "the image was closed"}, "open it again")
        try:
            with self._lock:
                plane = self._read_plane(scene, int(t), int(c), int(z))
        except ReaderError:
            raise
        except Exception as error:
            raise ReaderError(
                self.path,
                {self.name: f"reading plane t={t} c={c} z={z} of scene {scene} failed: "
                            f"{type(error).__name__}: {error}"},
                "The file may be truncated or corrupt; copy it again from the instrument.",
            ) from error
        plane = np.asarray(plane)
        expected = (dims.Y, dims.X)
        if plane.shape != expected:
            raise ReaderError(
                self.path,
                {self.name: f"plane t={t} c={c} z={z} has shape {plane.shape}, metadata says {expected}"},
                "the file's metadata and pixels disagree; try backend='bioformats'",
            )
        dtype = self._dtype_of(scene)
        if plane.dtype != dtype:
            if plane.dtype.kind == dtype.kind and plane.dtype.itemsize == dtype.itemsize:
                plane = plane.astype(dtype)  # byte order only
            else:
                raise ReaderError(
                    self.path,
                    {self.name: f"plane dtype {plane.dtype} differs from the metadata's {dtype}"},
                    "the file's metadata and pixels disagree; try backend='bioformats'",
                )
        return plane

    def plane(self, t: int = 0, c: int = 0, z: int = 0) -> np.ndarray:
        """Read one 2-D plane of the current scene.

        Parameters
        ----------
        t, c, z : int, optional
            0-based indices, each within :attr:`dims`.

        Returns
        -------
        plane : (Y, X) numpy.ndarray of :attr:`dtype`

        Raises
        ------
        IndexError
            If an index is out of range (the message gives the valid range).
        autotx_lib.errors.ReaderError
            If the backend fails to read the pixels (truncated or corrupt file).
        """
        return self._checked_plane(self._scene_index, t, c, z)

    @property
    def data(self) -> np.ndarray:
        """(T, C, Z, Y, X) numpy.ndarray : Every plane of the current scene, read now and cached."""
        scene = self._scene_index
        if scene not in self._data_cache:
            dims = self._dims(scene)
            out = np.empty(dims.shape, dtype=self._dtype_of(scene))
            for t in range(dims.T):
                for c in range(dims.C):
                    for z in range(dims.Z):
                        out[t, c, z] = self._checked_plane(scene, t, c, z)
            self._data_cache[scene] = out
        return self._data_cache[scene]

    @property
    def dask_data(self) -> Any:
        """dask.array.Array : The current scene, lazy, one ``(Y, X)`` plane per chunk."""
        return self.get_dask_data()

    def get_dask_data(self, chunk_dims: str = "YX") -> Any:
        """Lazy ``TCZYX`` array of the current scene with chosen chunking.

        Parameters
        ----------
        chunk_dims : str, optional
            Axes that each chunk spans whole; must include ``"YX"``. ``"YX"`` (default) gives
            one plane per chunk, ``"ZYX"`` one z-stack per chunk.

        Returns
        -------
        array : dask.array.Array
            Each chunk is read when computed, from any thread (the JVM is attached as needed).

        Raises
        ------
        ValueError
            If ``chunk_dims`` names an unknown axis or leaves out Y or X.
        """
        da = require("dask.array", "for lazy (dask) arrays")
        chunk_dims = chunk_dims.upper()
        if not set(chunk_dims) <= set(DIMENSION_ORDER) or not {"Y", "X"} <= set(chunk_dims):
            raise ValueError(
                f"chunk_dims={chunk_dims!r}: use letters of {DIMENSION_ORDER!r} including Y and X, "
                "e.g. 'YX' (one plane per chunk) or 'ZYX'"
            )
        scene = self._scene_index
        dims = self._dims(scene)
        dtype = self._dtype_of(scene)
        chunks = tuple(
            (size,) if axis in chunk_dims else (1,) * size for axis, size in dims.items()
        )

        def read_block(block_info: dict | None = None) -> np.ndarray:
            (t0, t1), (c0, c1), (z0, z1), _, _ = block_info[None]["array-location"]
            out = np.empty((t1 - t0, c1 - c0, z1 - z0, dims.Y, dims.X), dtype=dtype)
            for t in range(t0, t1):
                for c in range(c0, c1):
                    for z in range(z0, z1):
                        out[t - t0, c - c0, z - z0] = self._checked_plane(scene, t, c, z)
            return out

        return da.map_blocks(
            read_block, chunks=chunks, dtype=dtype,
            name=f"{self.name}-{self.path.name}-s{scene}-{chunk_dims}-{id(self):x}",
            meta=np.empty((0,) * 5, dtype=dtype),
        )

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Release the file handle(s); further reads raise :class:`ReaderError`."""
        if not self._closed:
            with self._lock:
                self._close()
                self._closed = True

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.path.name!r} backend={self.name} "
            f"scene={self._scene_index}/{len(self._scenes)} {self.dims} {self.dtype}>"
        )


#: Name for plugin authors: a backend *is* an Image subclass.
Reader = Image
