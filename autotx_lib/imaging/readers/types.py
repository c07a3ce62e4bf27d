"""Small value types shared by every reader backend: dims, scenes, pixel sizes, plates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: The one axis order every :class:`~autotx_lib.imaging.readers.Image` exposes.
DIMENSION_ORDER = "TCZYX"


@dataclass(frozen=True)
class Dimensions:
    """Sizes of the five axes of one scene, always in ``TCZYX`` order (bioio's convention).

    Attributes
    ----------
    T, C, Z, Y, X : int
        Number of time points, channels, focal planes, rows and columns.

    Examples
    --------
    >>> d = Dimensions(T=1, C=2, Z=5, Y=64, X=32)
    >>> d.order, d.shape, d["Z"]
    ('TCZYX', (1, 2, 5, 64, 32), 5)
    """

    T: int
    C: int
    Z: int
    Y: int
    X: int

    @property
    def order(self) -> str:
        """str : Always ``"TCZYX"``."""
        return DIMENSION_ORDER

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """tuple of int : ``(T, C, Z, Y, X)``."""
        return (self.T, self.C, self.Z, self.Y, self.X)

    def __getitem__(self, axis: str) -> int:
        if axis not in DIMENSION_ORDER or len(axis) != 1:
            raise KeyError(f"axis {axis!r} is not one of {tuple(DIMENSION_ORDER)}")
        return getattr(self, axis)

    def items(self) -> list[tuple[str, int]]:
        """Return ``[(axis, size), ...]`` in ``TCZYX`` order."""
        return [(axis, getattr(self, axis)) for axis in DIMENSION_ORDER]

    def __str__(self) -> str:
        return " ".join(f"{axis}={size}" for axis, size in self.items())


@dataclass(frozen=True)
class Scene:
    """One scene (Bio-Formats "series", OME "Image", CZI scene, LIF image, plate field).

    Attributes
    ----------
    index : int
        Position in :attr:`Image.scenes`, 0-based.
    id : str
        Stable identifier, OME style where the file has one (``"Image:0"``).
    name : str
        Human name from the file (may be empty).
    """

    index: int
    id: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.id} ({self.name})" if self.name and self.name != self.id else self.id


class PhysicalPixelSizes(NamedTuple):
    """Voxel size in micrometres, ``None`` where the file does not say (bioio's name and order)."""

    Z: float | None
    Y: float | None
    X: float | None


@dataclass(frozen=True)
class Channel:
    """One channel: its name and light, as the file records them (``None`` where it does not).

    Attributes
    ----------
    name : str
        The file's channel name (``"DAPI"``, ``"Leica/FITC"``), or ``"C:0"``... when unnamed.
    excitation_nm, emission_nm : float or None
        Excitation and emission wavelengths in nanometres.
    """

    name: str
    excitation_nm: float | None = None
    emission_nm: float | None = None


@dataclass(frozen=True)
class Objective:
    """The objective lens an image was taken with (``None`` where the file does not say).

    Attributes
    ----------
    name : str or None
        The model as the instrument names it, e.g. ``"Plan-Apochromat 20x/0.8 M27"``.
    magnification : float or None
        Nominal magnification.
    numerical_aperture : float or None
        Lens NA.
    immersion : str or None
        ``"Air"``, ``"Oil"``, ``"Water"``, ``"Glycerol"``... as the file says it.
    """

    name: str | None = None
    magnification: float | None = None
    numerical_aperture: float | None = None
    immersion: str | None = None


@dataclass(frozen=True)
class WellInfo:
    """One well of a plate and the scenes (fields) acquired in it.

    Attributes
    ----------
    name : str
        Row letter(s) and 2-digit column, e.g. ``"A01"``, ``"P24"``.
    row : int
        0-based row index (A = 0).
    column : int
        0-based column index (01 = 0).
    fields : list of int
        Scene indices of this well's fields, in field order.
    """

    name: str
    row: int
    column: int
    fields: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PlateInfo:
    """Plate layout of an HCS file: plate size and which scenes are which well's fields.

    Attributes
    ----------
    name : str
        Plate name from the file (or its id when unnamed).
    rows, columns : int
        Plate geometry (8 x 12 for a 96-well plate).
    wells : list of WellInfo
        Wells that have at least one field, in row-major order.
    """

    name: str
    rows: int
    columns: int
    wells: list[WellInfo] = field(default_factory=list)


@dataclass(frozen=True)
class ImageMetadata:
    """What a file says about itself.

    Attributes
    ----------
    ome : ome_types.OME or None
        The OME model, parsed with ome-types, when the backend provides OME-XML and it parses.
    ome_xml : str or None
        The raw OME-XML text, when there is one.
    raw : Any
        The backend's own metadata object (tifffile tags, nd2 metadata, CZI XML...), or None.
    """

    ome: Any
    ome_xml: str | None
    raw: Any = None


def well_name(row: int, column: int) -> str:
    """Name a well from 0-based row and column: ``(0, 0) -> "A01"``, ``(26, 1) -> "AA02"``.

    Examples
    --------
    >>> well_name(7, 11)
    'H12'
    """
    letters = ""
    r = row
    while True:
        letters = chr(ord("A") + r % 26) + letters
        r = r // 26 - 1
        if r < 0:
            break
    return f"{letters}{column + 1:02d}"
