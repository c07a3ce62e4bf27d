"""Destinations: where datasets are delivered (a local folder, an SMB share).

See :mod:`autotx_lib.transfer.destinations.base` for the protocol and
:func:`open_destination` for the URL forms. The SMB transport is imported only when an
``smb://`` destination is opened.
"""

from autotx_lib.transfer.destinations.base import MARKER_NAME, Destination, EntryInfo
from autotx_lib.transfer.destinations.local import LocalDestination
from autotx_lib.transfer.destinations.url import (
    Credentials,
    open_destination,
    parse_unc,
    read_password,
)

__all__ = ["MARKER_NAME", "Credentials", "Destination", "EntryInfo", "LocalDestination",
           "open_destination", "parse_unc", "read_password"]
