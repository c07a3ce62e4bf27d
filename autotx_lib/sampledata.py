"""Where the sample microscopy files are: one place for the notebooks (and anyone else).

The files are not part of the package (they are large and carry their own licences, see
their ``SOURCES.md``). :func:`sampledata_path` finds them from the ``AUTOTX_SAMPLEDATA``
environment variable, or beside a source checkout in ``../shared/sampledata``.
"""

from __future__ import annotations

import os
from pathlib import Path

from autotx_lib.errors import AutotxError

#: Environment variable naming the sample data folder (needed for an installed package).
SAMPLEDATA_ENV = "AUTOTX_SAMPLEDATA"


class SampleDataNotFoundError(AutotxError, FileNotFoundError):
    """The sample data folder is not where it was looked for."""


def sampledata_path() -> Path:
    """The folder holding the sample microscopy files (``czi/``, ``nd2/``, ``hcs/``, ...).

    Returns
    -------
    path : Path
        ``$AUTOTX_SAMPLEDATA`` if set; otherwise ``shared/sampledata`` beside the source
        checkout this package was imported from (the repository's parent folder).

    Raises
    ------
    SampleDataNotFoundError
        Saying where it looked and how to point at the files.

    Examples
    --------
    >>> from autotx_lib.sampledata import sampledata_path
    >>> sorted(p.name for p in sampledata_path().iterdir())[:3]  # doctest: +SKIP
    ['LICENSES', 'MANIFEST.tsv', 'SOURCES.md']
    """
    value = os.environ.get(SAMPLEDATA_ENV)
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise SampleDataNotFoundError(f"{SAMPLEDATA_ENV}={value} is not a folder; point it "
                                          "at the folder holding the sample files")
        return path
    checkout = Path(__file__).resolve().parent.parent  # the folder holding autotx_lib/
    path = checkout.parent / "shared" / "sampledata"
    if not path.is_dir():
        raise SampleDataNotFoundError(f"no sample data in {path}; set {SAMPLEDATA_ENV} to the "
                                      "folder holding the sample files (czi/, nd2/, hcs/, ...)")
    return path
