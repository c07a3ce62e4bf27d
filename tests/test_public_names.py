"""The first names a notebook user needs come from `autotx_lib` itself, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import autotx_lib


def test_importing_the_package_loads_no_heavy_module():
    code = ("import sys, autotx_lib; heavy = [m for m in ('javabridge', 'bioformats', 'bokeh', "
            "'dask', 'ipywidgets', 'sqlalchemy', 'pandas') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(set(autotx_lib.__all__) - {"__version__"}))
def test_every_public_name_resolves_to_the_library_object(name):
    value = getattr(autotx_lib, name)
    assert value.__module__.startswith("autotx_lib.")
    assert name in dir(autotx_lib)


def test_an_unknown_name_lists_the_public_ones():
    with pytest.raises(AttributeError, match="load_config"):
        autotx_lib.not_a_name  # noqa: B018


def test_all_lists_exactly_the_lazy_names():
    assert set(autotx_lib.__all__) == {"__version__", *autotx_lib._LAZY}
