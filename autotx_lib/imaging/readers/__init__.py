"""Reading microscopy files: Bio-Formats everywhere, native speed where it can be had.

>>> from autotx_lib.imaging.readers import open_image
>>> img = open_image("cells.czi")            # doctest: +SKIP
>>> img.dims, img.scenes, img.physical_pixel_sizes   # doctest: +SKIP
>>> img.plane(t=0, c=1, z=4)                 # doctest: +SKIP

Backends: tifffile (TIFF, OME-TIFF), nd2, readlif (LIF), czifile (CZI), imagexpress
(ImageXpress ``.HTD`` plates, see :mod:`.htd`), and Bio-Formats
(python-bioformats on javabridge) for everything, see :mod:`.registry`. Importing this
package starts no JVM and imports no heavy reader.

Axis conventions (where backends could disagree, the interpretation a scientist expects):

- A plain multi-page TIFF without axis metadata is a **Z** stack (Bio-Formats alone would
  call it T). ImageJ and OME-TIFF axis metadata is used when present.
- A Leica lambda (spectral) sweep is **C**: one channel per wavelength step (Bio-Formats
  stores it along T with a lambda modulo; readlif as a separate dimension).
- A Leica XZ scan is a plane whose rows are Z (the array's Y holds the scanned depth, as
  Bio-Formats reads it) and the stacked Y positions of an XZY scan are the array's Z; but
  ``img.scan_axes`` says ``"YZX"`` and ``img.physical_pixel_sizes`` are physical (the rows
  of an XZ plane are ``.Z`` apart), where Bio-Formats labels them Y. ``img.plane_pixel_size``
  gives a plane's (row, column) spacing for drawing it.

Metadata: ``img.channels`` (names, excitation/emission nm), ``img.acquisition_time``,
``img.objective``, ``img.time_increment``; the same from every backend where the file has
them. A part that cannot be read is a :class:`MetadataWarning` naming file and part (and is
listed in ``img.metadata_problems``), never silently dropped.
"""

from autotx_lib.imaging.readers.api import open_image
from autotx_lib.imaging.readers.array import ArrayReader
from autotx_lib.imaging.readers.base import Image, MetadataWarning, Reader
from autotx_lib.imaging.readers.conformance import check_image
from autotx_lib.imaging.readers.registry import BackendSpec, Registry, registry
from autotx_lib.imaging.readers.summary import summarize
from autotx_lib.imaging.readers.types import (
    Channel,
    Dimensions,
    ImageMetadata,
    Objective,
    PhysicalPixelSizes,
    PlateInfo,
    Scene,
    WellInfo,
)

__all__ = [
    "ArrayReader",
    "BackendSpec",
    "Channel",
    "Dimensions",
    "Image",
    "ImageMetadata",
    "MetadataWarning",
    "Objective",
    "PhysicalPixelSizes",
    "PlateInfo",
    "Reader",
    "Registry",
    "Scene",
    "WellInfo",
    "check_image",
    "open_image",
    "registry",
    "summarize",
]
