"""autotx_lib: move microscopy data off instrument PCs, verified; then look at what arrived."""

__version__ = "0.1.0"

import logging as _logging

# A library logs to "autotx" and leaves handlers to the application (the CLI sets a file).
_logging.getLogger("autotx").addHandler(_logging.NullHandler())
