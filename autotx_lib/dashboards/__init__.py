"""Jupyter dashboards: ipywidgets and bokeh faces over the library, no logic of their own.

Each dashboard is a class whose ``.widget`` you display in a notebook (or serve as a
Voila page from ``autotx_lib/pages``, see ``autotx dashboard``):

- :class:`TransferMonitor`: what the transfer agent is doing, its queue and results;
  suspend, resume and submit a folder.
- :class:`PlateQCDashboard`: plate quality control with a clickable heatmap.
- :class:`StackBrowser`: pick a microscopy file in a folder and look at it.
- :class:`FacilityMonitor`: every agent reporting to the facility hub, with controls.
- :class:`SessionLogger`: start and end an instrument session; what is already safe.
- :class:`PipelineLog`: the execution log of pipeline runs and their statistics.

Importing this package needs the ``viz`` extra (bokeh, jupyter_bokeh, ipywidgets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotx_lib.dashboards.facility import FacilityMonitor
    from autotx_lib.dashboards.pipelines import PipelineLog
    from autotx_lib.dashboards.plate_qc import PlateQCDashboard
    from autotx_lib.dashboards.session import SessionLogger
    from autotx_lib.dashboards.stack_browser import StackBrowser
    from autotx_lib.dashboards.transfer_monitor import TransferMonitor

__all__ = ["FacilityMonitor", "PipelineLog", "PlateQCDashboard", "SessionLogger",
           "StackBrowser", "TransferMonitor"]

_MODULES = {
    "FacilityMonitor": "autotx_lib.dashboards.facility",
    "TransferMonitor": "autotx_lib.dashboards.transfer_monitor",
    "PlateQCDashboard": "autotx_lib.dashboards.plate_qc",
    "StackBrowser": "autotx_lib.dashboards.stack_browser",
    "SessionLogger": "autotx_lib.dashboards.session",
    "PipelineLog": "autotx_lib.dashboards.pipelines",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
