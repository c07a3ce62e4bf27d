"""The dashboard pages served by ``autotx dashboard`` (Voila notebooks shipped as package data).

Each page is a notebook of two cells that calls one function of this module: the function
reads what the page shows from an environment variable set by ``autotx dashboard`` and
returns the dashboard's widget, or, when the variable is missing (the page was opened
directly, e.g. ``voila transfer_monitor.ipynb``) or names something unusable, a message
saying what to do instead (plain HTML output, not an error).

Importing this module is cheap: the dashboards (ipywidgets, bokeh) are imported only by
the page functions.

Examples
--------
>>> PAGES["transfer-monitor"].notebook.name
'transfer_monitor.ipynb'
>>> PAGES["plate-qc"].variable
'AUTOTX_PATH'
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_ENV", "PAGES", "PATH_ENV", "Page", "PAGES_FOLDER", "TEMPLATE_ROOT",
           "facility_page", "pipelines_page", "plate_qc_page", "session_page",
           "stack_browser_page", "transfer_monitor_page"]

#: Environment variables read by the pages (set by ``autotx dashboard``).
CONFIG_ENV = "AUTOTX_CONFIG"
PATH_ENV = "AUTOTX_PATH"

#: The folder holding the page notebooks (inside the installed package).
PAGES_FOLDER = Path(__file__).resolve().parent
#: A Jupyter data folder holding the ``autotx`` Voila template (no CDN links); put it on
#: ``JUPYTER_PATH`` and serve with ``--template=autotx``.
TEMPLATE_ROOT = PAGES_FOLDER / "share" / "jupyter"


@dataclass(frozen=True)
class Page:
    """One dashboard page.

    Attributes
    ----------
    name : str
        The name given to ``autotx dashboard``.
    notebook : Path
        The page's notebook.
    variable : str
        The environment variable the page reads (``AUTOTX_CONFIG`` or ``AUTOTX_PATH``).
    what : str
        What the variable names, for messages ("the agent's configuration file").
    option : str
        The ``autotx dashboard`` option that sets it (``-c CONFIG``, ``--path FOLDER``).
    """

    name: str
    notebook: Path
    variable: str
    what: str
    option: str

    @property
    def command(self) -> str:
        """The command that serves this page, e.g. ``autotx dashboard plate-qc --path FOLDER``."""
        return f"autotx dashboard {self.name} {self.option}"


PAGES: dict[str, Page] = {
    "transfer-monitor": Page("transfer-monitor", PAGES_FOLDER / "transfer_monitor.ipynb",
                             CONFIG_ENV, "the agent's configuration file", "-c CONFIG"),
    "plate-qc": Page("plate-qc", PAGES_FOLDER / "plate_qc.ipynb", PATH_ENV,
                     "a plate folder", "--path FOLDER"),
    "stack-browser": Page("stack-browser", PAGES_FOLDER / "stack_browser.ipynb", PATH_ENV,
                          "a folder of images", "--path FOLDER"),
    "facility": Page("facility", PAGES_FOLDER / "facility.ipynb", CONFIG_ENV,
                     "a file naming the hub (url, token_file)", "-c HUB_ACCESS"),
    "session": Page("session", PAGES_FOLDER / "session.ipynb", CONFIG_ENV,
                    "the agent's configuration file", "-c CONFIG"),
    "pipelines": Page("pipelines", PAGES_FOLDER / "pipelines.ipynb", CONFIG_ENV,
                      "the agent's configuration file", "-c CONFIG"),
}


def _message(text: str) -> Any:
    """``text`` (what to do) as HTML output, shown instead of a dashboard.

    Plain output, not a widget: it is in the page itself, so it shows even where widgets
    cannot load.
    """
    from IPython.display import HTML

    return HTML(f'<p class="autotx-page-message" style="font-size:1.1em">'
                f"{html.escape(text)}</p>")


def _setting(page: Page) -> str | None:
    value = os.environ.get(page.variable, "").strip()
    return value or None


def missing_setting_message(page: Page) -> str:
    """What to do when ``page`` is opened without its environment variable.

    Examples
    --------
    >>> print(missing_setting_message(PAGES["plate-qc"]))  # doctest: +NORMALIZE_WHITESPACE
    This page needs a plate folder. Serve it with `autotx dashboard plate-qc --path FOLDER`,
    or set the environment variable AUTOTX_PATH to a plate folder before starting Voila.
    """
    return (f"This page needs {page.what}. Serve it with `{page.command}`, or set the "
            f"environment variable {page.variable} to {page.what} before starting Voila.")


def _page(page: Page, build: Any) -> Any:
    value = _setting(page)
    if value is None:
        return _message(missing_setting_message(page))
    from autotx_lib.errors import AutotxError

    try:
        return build(value)
    except (AutotxError, FileNotFoundError, NotADirectoryError) as error:
        # the library's messages already say what is wrong and what to do
        return _message(f"{page.variable}={value}: {error}")


def transfer_monitor_page() -> Any:
    """The transfer monitor's widget for ``$AUTOTX_CONFIG``, or a message saying what to do."""
    from autotx_lib.dashboards import TransferMonitor

    return _page(PAGES["transfer-monitor"], lambda config: TransferMonitor(config).widget)


def session_page() -> Any:
    """The session logger (start/end button, what is already safe) for ``$AUTOTX_CONFIG``."""
    from autotx_lib.dashboards import SessionLogger

    return _page(PAGES["session"], lambda config: SessionLogger(config).widget)


def plate_qc_page() -> Any:
    """The plate QC dashboard for ``$AUTOTX_PATH`` (measuring in the background), or a message."""
    from autotx_lib.dashboards import PlateQCDashboard

    def build(folder: str) -> Any:
        board = PlateQCDashboard(folder)
        board.run_in_background()
        return board.widget

    return _page(PAGES["plate-qc"], build)


def stack_browser_page() -> Any:
    """The stack browser for the folder ``$AUTOTX_PATH``, or a message saying what to do."""
    from autotx_lib.dashboards import StackBrowser

    return _page(PAGES["stack-browser"], lambda folder: StackBrowser(folder).widget)


def facility_page() -> Any:
    """The facility monitor for the hub named in ``$AUTOTX_CONFIG`` (a TOML file with
    ``url`` and ``token_file``), or a message saying what to do."""
    from autotx_lib.dashboards.facility import FacilityMonitor

    return _page(PAGES["facility"], lambda path: FacilityMonitor.from_file(path).widget)


def pipelines_page() -> Any:
    """The pipeline log for ``$AUTOTX_CONFIG``, or a message saying what to do."""
    from autotx_lib.dashboards import PipelineLog

    return _page(PAGES["pipelines"], lambda config: PipelineLog(config).widget)
