"""Import optional heavy packages with an error that says why they are needed and how to get them."""

from __future__ import annotations

import importlib
from types import ModuleType

from autotx_lib.errors import MissingDependencyError

# import name -> (pip requirement, extra of autotx_lib that brings it)
_PACKAGES: dict[str, tuple[str, str]] = {
    "javabridge": ("python-javabridge", "imaging"),
    "bioformats": ("python-bioformats", "imaging"),
    "tifffile": ("tifffile", "imaging"),
    "nd2": ("nd2", "imaging"),
    "readlif": ("readlif", "imaging"),
    "czifile": ("czifile", "imaging"),
    "ome_types": ("ome-types", "imaging"),
    "dask": ("dask[array]", "imaging"),
    "distributed": ("distributed", "imaging"),
    "scipy": ("scipy", "imaging"),
    "bokeh": ("bokeh", "viz"),
    "jupyter_bokeh": ("jupyter_bokeh", "viz"),
    "ipywidgets": ("ipywidgets", "viz"),
    "omero": ("omero-py", "omero"),
    "psycopg": ("psycopg[binary]", "postgres"),
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` saying how to install it.

    Parameters
    ----------
    module : str
        The import name, e.g. ``"bokeh"``.
    purpose : str
        What it is needed for, completing "... is required <purpose>", e.g.
        ``"to draw plate heatmaps"``.

    Examples
    --------
    >>> np = require("numpy", "for arrays")
    >>> np.__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pip_name, extra = _PACKAGES.get(module.split(".")[0], (module, ""))
        how = f'python -m pip install "autotx_lib[{extra}]"' if extra else \
            f'python -m pip install "{pip_name}"'
        if module.split(".")[0] == "javabridge":
            how = "run `python3 tools/setup_env.py` (it builds python-javabridge for numpy 2)"
        if extra == "omero":
            how = "run `python3 tools/setup_omero.py` (it builds zeroc-ice and installs omero-py)"
        raise MissingDependencyError(
            f"The {pip_name} package is required {purpose} but could not be imported "
            f"({error}). Install it with: {how}"
        ) from error
