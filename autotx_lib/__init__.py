"""autotx_lib: move microscopy data off instrument PCs, verified; then look at what arrived.

The names a notebook user needs first are importable from here, lazily: ``import
autotx_lib`` stays cheap (no JVM, no bokeh, no dask) until a name is used.

Examples
--------
>>> import autotx_lib
>>> config = autotx_lib.load_config("autotx.toml")            # doctest: +SKIP
>>> autotx_lib.Agent(config).run(once=True)                   # doctest: +SKIP
>>> autotx_lib.status(config).queue_df()                      # doctest: +SKIP
>>> image = autotx_lib.open_image("stack.nd2")                # doctest: +SKIP
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A library logs to "autotx" and leaves handlers to the application (the CLI sets a file).
_logging.getLogger("autotx").addHandler(_logging.NullHandler())

if TYPE_CHECKING:
    from autotx_lib.config import Config, load_config
    from autotx_lib.dashboards import PlateQCDashboard, StackBrowser, TransferMonitor
    from autotx_lib.imaging.plate import plate_qc
    from autotx_lib.imaging.readers import open_image
    from autotx_lib.imaging.viewer import view_stack
    from autotx_lib.journal import Journal
    from autotx_lib.sampledata import sampledata_path
    from autotx_lib.transfer.agent import Agent
    from autotx_lib.transfer.control import resume, set_bandwidth, suspend
    from autotx_lib.transfer.grace import grace_report, purge
    from autotx_lib.transfer.requeue import requeue
    from autotx_lib.transfer.status import status
    from autotx_lib.transfer.submit import submit

#: public name -> the module that defines it (imported on first use)
_LAZY = {
    "Config": "autotx_lib.config", "load_config": "autotx_lib.config",
    "Journal": "autotx_lib.journal",
    "Agent": "autotx_lib.transfer.agent", "status": "autotx_lib.transfer.status",
    "submit": "autotx_lib.transfer.submit", "requeue": "autotx_lib.transfer.requeue",
    "suspend": "autotx_lib.transfer.control", "resume": "autotx_lib.transfer.control",
    "set_bandwidth": "autotx_lib.transfer.control",
    "grace_report": "autotx_lib.transfer.grace", "purge": "autotx_lib.transfer.grace",
    "open_image": "autotx_lib.imaging.readers", "plate_qc": "autotx_lib.imaging.plate",
    "view_stack": "autotx_lib.imaging.viewer",
    "TransferMonitor": "autotx_lib.dashboards", "PlateQCDashboard": "autotx_lib.dashboards",
    "StackBrowser": "autotx_lib.dashboards",
    "sampledata_path": "autotx_lib.sampledata",
}

__all__ = [
    "__version__", "Config", "load_config", "Journal", "Agent", "status", "submit", "requeue",
    "suspend", "resume", "set_bandwidth", "grace_report", "purge", "open_image", "plate_qc",
    "view_stack", "TransferMonitor", "PlateQCDashboard", "StackBrowser", "sampledata_path",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autotx_lib' has no attribute {name!r}; the public names "
                             f"are {', '.join(sorted(_LAZY))}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
