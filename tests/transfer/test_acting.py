"""Acting on what is seen: requeue, bandwidth (rates and timetables), a second suspend,
and submit saying what will keep a dataset from moving."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from autotx_lib.config import Config
from autotx_lib.errors import AlreadySuspendedError, RequeueError
from autotx_lib.journal import Journal
from autotx_lib.transfer import control
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.bandwidth import Timetable, parse_rate, resolve
from autotx_lib.transfer.requeue import requeue

from .conftest import make_dataset, tree, write_config


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autotx_lib.cli", *args], capture_output=True,
                          text=True)


# --- requeue ------------------------------------------------------------------------------


def test_an_unmatched_dataset_is_requeued_by_id_once_the_user_folder_exists(facility):
    make_dataset(facility.incoming, "bob", "exp", {"a.txt": b"a"})
    [dataset_id] = Agent(facility).run(once=True).unmatched
    (facility.destination / "bob").mkdir()

    done = requeue(facility, dataset_id)

    assert done.target == facility.incoming / "bob" / "exp" and not done.warnings
    assert not done.source.exists()
    assert Agent(facility).run(once=True).delivered
    assert tree(facility.destination / "bob" / "exp") == {"a.txt": b"a"}
    row = Journal(facility.journal_url).dataset(dataset_id)
    assert "requeued by" in row.error and row.final_path == str(done.target)
    with pytest.raises(RequeueError, match="gone"):
        requeue(facility, dataset_id)  # its folder is not in unmatched/ any more


def test_a_quarantined_dataset_is_requeued_by_path_and_warns_what_still_blocks(facility):
    folder = make_dataset(facility.incoming, "alice", "empty", {})
    (folder / "sub").mkdir()  # no file at all: quarantined
    [dataset_id] = Agent(facility).run(once=True).failed
    quarantined = next((facility.managed / "error" / "alice").glob("*__empty"))
    (quarantined / "sub" / "now-there.txt").write_text("fixed")
    facility.readiness.marker_file = "acquisition.done"

    done = requeue(facility, str(quarantined))

    assert done.dataset_id == dataset_id and (done.target / "sub" / "now-there.txt").exists()
    assert any("marker file acquisition.done" in w for w in done.warnings)


def test_requeue_refuses_delivered_datasets_and_paths_elsewhere(facility, tmp_path):
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    [dataset_id] = Agent(facility).run(once=True).delivered
    with pytest.raises(RequeueError, match="is done"):
        requeue(facility, dataset_id)
    with pytest.raises(RequeueError, match="not a dataset folder"):
        requeue(facility, str(tmp_path))
    config = write_config(facility, tmp_path / "autotx.toml")
    result = cli("requeue", "-c", str(config), str(dataset_id))
    assert result.returncode == 2 and "is done" in result.stderr
    assert "Traceback" not in result.stderr


# --- bandwidth ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mb_s"), [("20", 20.0), ("20M", 20.0), ("512k", 0.512),
                                            ("1G", 1000.0), ("2.5m", 2.5), ("off", None)])
def test_rates_parse_in_mb_per_second(text, mb_s):
    assert parse_rate(text) == mb_s


@pytest.mark.parametrize("bad", ["fast", "-3M", "0", "10 parsecs", "25:00,1M", "Mon-Fri",
                                 "08:00,quick"])
def test_bad_bandwidth_values_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="e.g.|example"):
        resolve(bad)


def test_a_timetable_applies_by_weekday_and_wraps_across_the_week():
    table = Timetable.parse("Mon-Fri 08:00,10M 19:00,off Sat 10:00,1M")
    monday = dt.datetime(2026, 11, 30)  # a Monday
    assert table.rate_at(monday.replace(hour=7, minute=59)) == 1.0  # from Sat 10:00 on
    assert table.rate_at(monday.replace(hour=8)) == 10.0
    assert table.rate_at(monday.replace(hour=19, minute=1)) is None
    assert table.rate_at(monday + dt.timedelta(days=5, hours=9)) is None  # Sat 09:00
    assert table.rate_at(monday + dt.timedelta(days=5, hours=11)) == 1.0
    daily = Timetable.parse("08:00,5M 18:00,off")
    assert daily.rate_at(dt.datetime(2026, 12, 6, 12)) == 5.0  # a Sunday too


def test_bandwidth_set_live_overrides_the_config_and_default_restores_it(facility, tmp_path):
    facility.gate.bandwidth_mb_s = 50
    config = write_config(facility, tmp_path / "autotx.toml")
    config.write_text(config.read_text().replace("[gate]\n", "[gate]\nbandwidth_mb_s = 50\n"))
    path, cfg = str(config), facility
    assert control.effective_bandwidth(cfg) == 50
    assert cli("bandwidth", "-c", path, "off").returncode == 0
    assert control.effective_bandwidth(cfg) is None
    shown = cli("bandwidth", "-c", path, "00:00,7M")
    assert shown.returncode == 0 and "now 7 MB/s" in shown.stdout
    assert control.effective_bandwidth(cfg) == 7
    assert "from the config" in cli("bandwidth", "-c", path, "default").stdout
    assert control.effective_bandwidth(cfg) == 50
    bad = cli("bandwidth", "-c", path, "warp9")
    assert bad.returncode == 2 and "e.g. 20M" in bad.stderr and "Traceback" not in bad.stderr


def test_a_timetable_in_the_config_is_checked(facility):
    with pytest.raises(ValueError, match="example"):
        Config.model_validate({**facility.model_dump(by_alias=True),
                               "gate": {"bandwidth_mb_s": "Mon-Fri 8am,10M"}})


# --- suspend twice, submit notes ------------------------------------------------------------


def test_a_second_suspend_says_who_suspended_and_keeps_the_first_reason(facility, tmp_path):
    control.suspend(facility, "laser service until 14:00")
    with pytest.raises(AlreadySuspendedError, match="laser service"):
        control.suspend(facility, "someone else's reason")
    assert control.suspension(facility).reason == "laser service until 14:00"
    config = write_config(facility, tmp_path / "autotx.toml")
    second = cli("suspend", "-c", str(config), "--reason", "other")
    assert second.returncode == 2 and "already suspended by" in second.stderr
    assert "--replace" in second.stderr
    replaced = cli("suspend", "-c", str(config), "--reason", "other", "--replace")
    assert replaced.returncode == 0 and control.suspension(facility).reason == "other"


def test_submit_says_when_what_it_queued_will_not_move(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml",
                          extra='create_user_dirs = false\n')
    text = config.read_text().replace("[readiness]\n",
                                      '[readiness]\nmarker_file = "acquisition.done"\n')
    config.write_text(text)
    run = make_dataset(tmp_path / "acquisitions", "x", "run42", {"a.txt": b"a"})
    result = cli("submit", "-c", str(config), str(run), "--user", "carol")
    assert result.returncode == 0, result.stderr
    assert "marker file acquisition.done" in result.stderr
    assert "no folder 'carol' at the destination" in result.stderr
