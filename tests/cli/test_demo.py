"""`autotx demo` says where it built the demo and how big it is; only --keep leaves it behind."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib.cli import app

runner = CliRunner()


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """The demo's temporary folders go here, so the test sees what is left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_demo_removes_its_temporary_folder_and_says_so(temp_root):
    result = runner.invoke(app, ["demo", "--scale", "0.02"], env={"COLUMNS": "80"})

    assert result.exit_code == 0, (result.stdout, result.stderr)
    said = re.search(r"Removed the demo facility \(([\d.]+ [kMG]?B)\) from (\S+);",
                     result.stdout)
    assert said, result.stdout
    assert said.group(1).endswith("MB")
    assert Path(said.group(2)).parent == temp_root
    assert list(temp_root.iterdir()) == []  # nothing left behind
    assert "--keep" in result.stdout


def test_demo_keep_leaves_it_and_says_where(temp_root):
    result = runner.invoke(app, ["demo", "--scale", "0.02", "--keep"], env={"COLUMNS": "80"})

    assert result.exit_code == 0, (result.stdout, result.stderr)
    said = re.search(r"The demo facility \(([\d.]+ [kMG]?B)\) stays in (\S+);", result.stdout)
    assert said, result.stdout
    root = Path(said.group(2))
    assert root.parent == temp_root and (root / "autotx.toml").is_file()
    assert f"autotx status -c {root / 'autotx.toml'}" in result.stdout
    status = runner.invoke(app, ["status", "-c", str(root / "autotx.toml")])
    assert status.exit_code == 0 and "done" in status.stdout


def test_demo_keeps_a_folder_given_with_dir(tmp_path):
    root = tmp_path / "my-demo"
    result = runner.invoke(app, ["demo", "--scale", "0.02", "--dir", str(root)])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert (root / "autotx.toml").is_file() and f"stays in {root}" in result.stdout
