"""Status from the journal, and the transfer commands through typer's CliRunner."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.status import status

from .conftest import make_dataset, tree

runner = CliRunner()


def write_config(facility, path):
    path.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                    f'destination = "{facility.destination}"\n[readiness]\nquiet_seconds = 0\n'
                    '[gate]\nmax_cpu_percent = 100\n')
    return path


def test_status_reports_history_queue_and_frames(facility):
    make_dataset(facility.incoming, "alice", "exp", {"a.bin": os.urandom(3000)})
    make_dataset(facility.incoming, "bob", "exp", {"b.bin": b"b"})
    Agent(facility).run(once=True)

    snapshot = status(facility)

    assert snapshot.agent_state == "stopped" and snapshot.current is None
    by_user = {d.user: d for d in snapshot.history}
    assert by_user["alice"].state == "done" and by_user["alice"].verified
    assert by_user["alice"].percent == 100.0 and by_user["alice"].total_bytes == 3000
    assert by_user["bob"].state == "unmatched"
    history = snapshot.history_df()
    assert set(history["user"]) == {"alice", "bob"} and "percent" in history.columns
    assert snapshot.queue_df().empty
    events = snapshot.events_df()
    assert (events["kind"] == "delivered").sum() == 1
    assert json.loads(json.dumps(snapshot.to_dict()))["history"][0]["user"] in {"alice", "bob"}
    assert status(facility, history=0).history == []  # none asked: none read (the heartbeat)


def test_status_shows_a_waiting_dataset_in_the_queue(facility):
    os.rename(facility.destination, facility.destination.with_name("offline"))
    make_dataset(facility.incoming, "alice", "exp", {"a": b"a"})
    Agent(facility).run(once=True)
    snapshot = status(facility)
    assert [d.state for d in snapshot.queue] == ["queued"]
    assert "missing or not mounted" in snapshot.queue[0].error


def test_run_status_and_json_commands(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    make_dataset(facility.incoming, "alice", "exp", {"a.bin": b"abc"})

    result = runner.invoke(app, ["run", "--once", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 delivered" in result.output
    assert tree(facility.destination / "alice" / "exp") == {"a.bin": b"abc"}

    result = runner.invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0 and "exp" in result.output and "done" in result.output

    result = runner.invoke(app, ["status", "-c", str(config), "--json"])
    data = json.loads(result.stdout)
    assert data["history"][0]["state"] == "done" and data["agent_state"] == "stopped"


def test_run_exits_1_when_something_failed(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    (facility.incoming / "alice" / "empty").mkdir(parents=True)
    result = runner.invoke(app, ["run", "--once", "-c", str(config)])
    assert result.exit_code == 1 and "1 quarantined" in result.output


def test_submit_renames_on_the_same_volume(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    run = tmp_path / "acquisitions" / "run42"
    run.mkdir(parents=True)
    (run / "img.tif").write_bytes(b"pixels")
    result = runner.invoke(app, ["submit", "-c", str(config), str(run), "--user", "alice"])
    assert result.exit_code == 0, result.output
    assert (facility.incoming / "alice" / "run42" / "img.tif").read_bytes() == b"pixels"
    assert not run.exists()


def test_submit_refuses_what_it_must_not_take(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "link").symlink_to(run)
    cases = {
        (str(run), "../evil"): "cannot be used",
        (str(tmp_path / "file.txt"), "alice"): "is not a folder",
        (str(tmp_path / "link"), "alice"): "symbolic link",
        (str(facility.destination / "alice"), "alice"): "overlaps the agent's destination",
        ("/usr", "alice"): "outside the folders that may be submitted",
    }
    for (path, user), message in cases.items():
        result = runner.invoke(app, ["submit", "-c", str(config), path, "--user", user])
        assert result.exit_code == 2, (path, result.output)
        assert message in result.output, (path, result.output)
    assert run.is_dir()


def test_submit_copies_from_another_volume_and_keeps_the_original(facility, tmp_path,
                                                                   mount_tmpfs):
    usb = tmp_path / "usb"
    mount_tmpfs(usb, "8m")
    run = usb / "run7"
    (run / "sub").mkdir(parents=True)
    (run / "sub" / "a.tif").write_bytes(os.urandom(100_000))
    facility.submit_roots = [usb]
    from autotx_lib.transfer.submit import submit

    queued = submit(facility, run, "alice")
    assert queued == facility.incoming / "alice" / "run7"
    assert tree(queued) == tree(run)
    assert run.is_dir()
    assert not list((facility.incoming / "alice").glob(".autotx-submit-*"))


def test_demo_command_delivers_and_verifies(tmp_path):
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--scale", "0.05"])
    assert result.exit_code == 0, result.output
    assert "what arrived" in result.output and result.output.count("verified") >= 3
    storage = tmp_path / "demo" / "central-storage"
    assert sorted(p.name for p in (storage / "alice").iterdir()) == [
        "HeLa_DAPI_63x", "mitochondria_timelapse"]
    assert (storage / "bob" / "Plate_3435" / "autotx-manifest.xxh128").is_file()
    assert not (storage / "carol").exists()


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "x").write_text("keep me")
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "x").read_text() == "keep me"
