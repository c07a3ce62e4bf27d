"""Which backend reads which file: an ordered list per extension, native first, Bio-Formats last.

Selection policy
----------------
1. The file name's longest known suffix decides (``x.ome.tif`` matches ``ome.tif`` before
   ``tif``); matching is case-insensitive.
2. Backends claiming that suffix are tried in order: built-in native backends (tifffile,
   nd2, readlif, czifile, imagexpress for ``.HTD`` plates), then plugins (entry-point group ``autotx_lib.readers``), then
   Bio-Formats. The first that opens the file wins; each failure is recorded. A native
   backend that *refuses* a valid file (an axis it does not handle) passes it on; one that
   recognises its format's signature in the file and still fails means the file is damaged
   (truncated): the search stops with a :class:`~autotx_lib.errors.ReaderError`, because
   Bio-Formats would return zero-filled or misread planes for such files.
3. A suffix nobody claims is tried with Bio-Formats, which also sniffs content.
4. ``backend="name"`` tries that backend only.

Plugins
-------
A distribution registers a backend with an entry point in the group ``autotx_lib.readers``
whose object is either a :class:`BackendSpec` or an :class:`~.base.Image` subclass with
``name`` and ``extensions`` class attributes::

    [project.entry-points."autotx_lib.readers"]
    myformat = "my_package.reader:MyFormatReader"

A plugin that fails to load produces a :class:`RuntimeWarning` and is skipped.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "autotx_lib.readers"


@dataclass(frozen=True)
class BackendSpec:
    """A reader backend as the registry knows it, before its heavy module is imported.

    Attributes
    ----------
    name : str
        Unique name, used for ``open_image(..., backend=name)`` and in error messages.
    extensions : tuple of str
        Suffixes claimed, lower case without the leading dot (``"ome.tif"``, ``"czi"``).
    load : callable
        Returns the :class:`~.base.Image` subclass; imports happen here, not at registration.
    native : bool
        True for fast paths; False for the universal fallback (Bio-Formats), tried last.
    signatures : tuple of bytes
        Leading bytes of the backend's format. When a file starts with one of them and the
        backend still fails (other than by refusing), the file is damaged: the registry
        stops there rather than let a fallback return garbage.
    """

    name: str
    extensions: tuple[str, ...]
    load: Callable[[], type]
    native: bool = True
    signatures: tuple[bytes, ...] = ()

    def recognises(self, head: bytes) -> bool:
        """True if ``head`` (a file's first bytes) starts with one of the signatures."""
        return any(head.startswith(sig) for sig in self.signatures)


def _lazy(module: str, cls: str) -> Callable[[], type]:
    def load() -> type:
        return getattr(importlib.import_module(module), cls)

    return load


_PKG = "autotx_lib.imaging.readers"
_TIFF_SUFFIXES = ("ome.tif", "ome.tiff", "ome.btf", "tif", "tiff", "btf", "tf2", "tf8", "stk", "lsm")


def _builtin_specs() -> list[BackendSpec]:
    from autotx_lib.imaging.readers.bioformats import BIOFORMATS_SUFFIXES

    return [
        BackendSpec("tifffile", _TIFF_SUFFIXES, _lazy(f"{_PKG}.tiff", "TiffReader"),
                    signatures=(b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")),
        BackendSpec("nd2", ("nd2",), _lazy(f"{_PKG}.nd2", "ND2Reader"),
                    signatures=(b"\xda\xce\xbe\x0a",)),
        BackendSpec("readlif", ("lif",), _lazy(f"{_PKG}.lif", "LifReader"),
                    signatures=(b"\x70\x00\x00\x00",)),
        BackendSpec("czifile", ("czi",), _lazy(f"{_PKG}.czi", "CziReader"),
                    signatures=(b"ZISRAWFILE",)),
        BackendSpec("imagexpress", ("htd",), _lazy(f"{_PKG}.htd", "HtdReader"),
                    signatures=(b'"HTSInfoFile"',)),
        BackendSpec("bioformats", BIOFORMATS_SUFFIXES,
                    _lazy(f"{_PKG}.bioformats", "BioformatsReader"), native=False),
    ]


class Registry:
    """Ordered backends per suffix; see the module docstring for the policy."""

    def __init__(self) -> None:
        self._specs: list[BackendSpec] = []
        self._plugins_loaded = False
        self._lock = threading.Lock()

    def register(self, spec: BackendSpec) -> None:
        """Add (or replace, by name) a backend. Natives go before the fallback."""
        with self._lock:
            self._specs = [s for s in self._specs if s.name != spec.name]
            self._specs.append(spec)

    def unregister(self, name: str) -> None:
        """Remove a backend by name (no error if absent)."""
        with self._lock:
            self._specs = [s for s in self._specs if s.name != name]

    def load_plugins(self, *, reload: bool = False) -> list[str]:
        """Register backends from the ``autotx_lib.readers`` entry points; return their names.

        A plugin that cannot be loaded is skipped with a :class:`RuntimeWarning`.
        """
        if self._plugins_loaded and not reload:
            return []
        self._plugins_loaded = True
        names = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                spec = _spec_from_plugin(ep.name, ep.load())
            except Exception as error:
                warnings.warn(
                    f"reader plugin {ep.name!r} ({ep.value}) failed to load and is skipped: "
                    f"{type(error).__name__}: {error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            self.register(spec)
            names.append(spec.name)
        return names

    @property
    def specs(self) -> list[BackendSpec]:
        """list of BackendSpec : Every backend, native ones first."""
        self.load_plugins()
        return [s for s in self._specs if s.native] + [s for s in self._specs if not s.native]

    def names(self) -> list[str]:
        """Names of every registered backend, in trial order."""
        return [s.name for s in self.specs]

    def get(self, name: str) -> BackendSpec:
        """The backend called ``name``.

        Raises
        ------
        ValueError
            If there is none; the message lists the valid names.
        """
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise ValueError(f"unknown reader backend {name!r}; available: {', '.join(self.names())}")

    def candidates(self, path: str | Path) -> list[BackendSpec]:
        """Backends to try for ``path``, in order (see the selection policy)."""
        name = Path(path).name.lower()
        specs = self.specs
        suffixes = sorted({ext for s in specs for ext in s.extensions}, key=len, reverse=True)
        matched = next((ext for ext in suffixes if name.endswith("." + ext)), None)
        chosen = [s for s in specs if matched is not None and matched in s.extensions]
        # shorter suffixes also apply (a .ome.tif is a .tif for Bio-Formats)
        chosen += [
            s for s in specs
            if s not in chosen and any(name.endswith("." + ext) for ext in s.extensions)
        ]
        fallback = [s for s in specs if not s.native and s not in chosen]
        ordered = [s for s in chosen if s.native] + [s for s in chosen if not s.native]
        return ordered + fallback


def _spec_from_plugin(ep_name: str, obj: object) -> BackendSpec:
    if isinstance(obj, BackendSpec):
        return obj
    if isinstance(obj, type) and hasattr(obj, "extensions"):
        extensions = tuple(str(e).lower().lstrip(".") for e in obj.extensions)
        name = getattr(obj, "name", None)
        if not name or name == "abstract":
            name = ep_name
        return BackendSpec(str(name), extensions, lambda: obj)
    raise TypeError(
        f"entry point {ep_name!r} gives {obj!r}; expected a BackendSpec or an Image subclass "
        "with `name` and `extensions`"
    )


#: The process-wide registry used by :func:`open_image`.
registry = Registry()
for _spec in _builtin_specs():
    registry.register(_spec)
