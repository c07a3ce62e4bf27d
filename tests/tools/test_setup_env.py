"""tools/setup_env.py: pip only when something is missing; a broken .venv is repaired.

Every venv here is a throwaway one in tmp_path (the shared .venv is only read). Creating
them and ``ensurepip`` need no network.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("setup_env", ROOT / "tools" / "setup_env.py")
setup_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(setup_env)

BASE = set(setup_env.BASE_EXTRAS)


def make_venv(path: Path, *, pip: bool = False) -> Path:
    command = [sys.executable, "-m", "venv", str(path)]
    subprocess.run(command if pip else [*command, "--without-pip"], check=True, timeout=300)
    return path


def test_a_venv_left_without_pip_gets_pip_back_offline(tmp_path):
    venv = make_venv(tmp_path / "venv")  # what an interrupted `python -m venv` leaves
    assert setup_env.probe_venv(venv) == "no-pip"
    assert setup_env.repair_venv(venv) == "pip-restored"
    assert setup_env.probe_venv(venv) == "ok"
    assert setup_env.repair_venv(venv) == ""  # nothing more to do


def test_a_broken_pip_is_replaced_and_nothing_else_touched(tmp_path):
    venv = make_venv(tmp_path / "venv", pip=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    (site / "keep_me.py").write_text("VALUE = 1\n")  # stands for the installed stack
    (site / "pip" / "__main__.py").unlink()  # pip is there, but `python -m pip` fails
    assert setup_env.probe_venv(venv) == "ok" and not setup_env.pip_works(venv)
    setup_env.restore_pip(venv)
    assert setup_env.pip_works(venv)
    assert (site / "keep_me.py").read_text() == "VALUE = 1\n"


def test_a_venv_whose_python_is_gone_is_rebuilt_and_an_absent_one_created(tmp_path):
    venv = make_venv(tmp_path / "venv")
    python = setup_env.venv_python(venv)
    python.unlink()
    python.symlink_to(tmp_path / "no-such-python")  # dangling, as after a Python upgrade
    assert setup_env.probe_venv(venv) == "no-python"
    assert setup_env.repair_venv(venv) == "rebuilt"
    assert setup_env.probe_venv(venv) == "ok"
    absent = tmp_path / "absent"
    assert setup_env.probe_venv(absent) == "absent"
    assert setup_env.repair_venv(absent) == "created"
    assert setup_env.probe_venv(absent) == "ok"


def test_missing_requirements_names_only_what_is_not_met():
    shared = Path(sys.prefix)  # the environment running these tests: read only
    pip_version = importlib.metadata.version("pip")
    wanted = ["pip>=1", "pip>=9999", "no-such-distribution-autotx", "pydantic>=2",
              'no-such-distribution-autotx-old; python_version < "3"']
    assert setup_env.missing_requirements(wanted, shared) == [
        f"pip>=9999 (installed: {pip_version})", "no-such-distribution-autotx"]


def test_requirements_expand_the_projects_own_extras():
    found = setup_env.requirements({"test"}) + setup_env.requirements(set())
    assert "pydantic>=2.6" in found and "pytest>=8" in found
    assert not any(r.startswith("autotx_lib") for r in found)
    everything = setup_env.requirements({"complete"})
    assert "voila>=0.5" in everything and "psycopg[binary]>=3.1" in everything


def test_the_extras_only_grow_so_autotx_never_undoes_run_tests():
    stamp = {"pyproject": "d1", "extras": sorted(BASE | {"test"})}
    wanted = setup_env.wanted_extras(BASE, stamp)  # ./autotx after ./run-tests
    assert wanted == BASE | {"test"}
    assert setup_env.up_to_date(stamp, "d1", wanted)
    assert not setup_env.up_to_date(stamp, "d2", wanted)  # pyproject.toml changed
    assert not setup_env.up_to_date({"pyproject": "d1", "extras": sorted(BASE)}, "d1",
                                    BASE | {"test"})  # ./run-tests after ./autotx: check


def _installed_root() -> Path:
    """Where the shared environment's autotx_lib is installed from (editable)."""
    url = json.loads(importlib.metadata.distribution("autotx_lib").read_text("direct_url.json"))
    return Path(url["url"].removeprefix("file://"))


def test_a_complete_environment_runs_no_pip_whatever_the_order_of_the_commands(tmp_path):
    """A venv seeing the shared packages (a .pth file): nothing missing, so no pip at all."""
    root = _installed_root()
    venv = make_venv(tmp_path / "venv")
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv)}))
    site.mkdir(parents=True, exist_ok=True)
    (site / "shared.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (venv / setup_env.STAMP_NAME).write_text("274c55a39e4b0fcc05cdf5224f")  # an old stamp
    if setup_env.missing_requirements(setup_env.requirements(BASE | {"test"}, root), venv):
        pytest.skip("the shared environment lacks some requirements; nothing to compare with")
    assert setup_env.install_project(BASE | {"test"}, venv, root) == []  # ./run-tests
    assert setup_env.install_project(BASE, venv, root) == []  # ./autotx
    assert setup_env.install_project(BASE | {"test"}, venv, root) == []  # ./run-tests
    assert set(setup_env.read_stamp(venv)["extras"]) == BASE | {"test"}
