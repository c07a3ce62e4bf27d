"""`autotx verify`: delivered datasets hashed again (bit rot, tampering, deletion), and the
agent's idle rounds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from autotx_lib.errors import DestinationError
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.recheck import recheck_delivered

from .conftest import make_dataset, write_config

FILES = {"a.tif": os.urandom(5000), "sub/b.txt": b"b" * 100}


def deliver_two(facility) -> tuple:
    make_dataset(facility.incoming, "alice", "one", FILES)
    make_dataset(facility.incoming, "alice", "two", FILES)
    assert len(Agent(facility).run(once=True).delivered) == 2
    return facility.destination / "alice" / "one", facility.destination / "alice" / "two"


def test_untouched_deliveries_verify(facility):
    deliver_two(facility)
    report = recheck_delivered(facility)
    assert [c.name for c in report.checked] == ["one", "two"] and report.ok
    assert report.checked[0].files == 2 and report.checked[0].bytes == 5100


def test_bit_rot_tampering_additions_and_deletion_are_found(facility):
    one, two = deliver_two(facility)
    data = bytearray((one / "a.tif").read_bytes())
    data[100] ^= 0x01  # one flipped bit, same size, same mtime kept
    stat = (one / "a.tif").stat()
    (one / "a.tif").write_bytes(bytes(data))
    os.utime(one / "a.tif", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (one / "sub" / "extra.txt").write_text("added later")
    shutil.rmtree(two)

    report = recheck_delivered(facility)

    problems = {c.name: c.problems for c in report.checked}
    assert any("a.tif" in p and "differs from the journal" in p for p in problems["one"])
    assert any("extra.txt" in p and "added after delivery" in p for p in problems["one"])
    assert problems["two"] == [f"the delivered copy {two} is gone (deleted or moved)"]
    kinds = [e.kind for e in Journal(facility.journal_url).recent_events(20)]
    assert kinds.count("recheck-failed") == 2


def test_a_rewritten_manifest_does_not_hide_a_replaced_file(facility):
    one, _ = deliver_two(facility)
    (one / "a.tif").write_bytes(b"replaced")
    manifest = one / "autotx-manifest.xxh128"
    from autotx_lib.transfer.copy import hash_file

    lines = [line for line in manifest.read_text().splitlines() if "a.tif" not in line]
    lines.append(f"{hash_file(one / 'a.tif', 'xxh3_128')}  a.tif")
    manifest.write_text("\n".join(lines) + "\n")
    problems = recheck_delivered(facility, dataset_ids=[1]).checked[0].problems
    assert any("manifest" in p and "changed since delivery" in p for p in problems)
    assert any("a.tif" in p for p in problems)


def test_an_unmounted_destination_is_an_error_not_a_thousand_deletions(facility):
    deliver_two(facility)
    os.rename(facility.destination, facility.destination.with_name("away"))
    facility.destination.mkdir()
    with pytest.raises(DestinationError, match="not mounted"):
        recheck_delivered(facility)


def test_verify_command_exit_status_json_and_admin_mail(facility, tmp_path, admin_mail):
    one, _ = deliver_two(facility)
    config = write_config(facility, tmp_path / "autotx.toml")
    config.write_text(config.read_text().replace(
        "[readiness]", f'[email]\nsmtp_host = "127.0.0.1"\nsmtp_port = '
        f'{facility.email.smtp_port}\nsecurity = "none"\nadmin = "admin@example.org"\n'
        "[readiness]"))
    command = [sys.executable, "-m", "autotx_lib.cli", "verify", "-c", str(config)]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    (one / "a.tif").write_bytes(b"rotten")
    result = subprocess.run([*command, "--json"], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["failed"] == 1
    subjects = [m["Subject"] for m in admin_mail.to("admin@example.org")]
    assert any("no longer match" in s for s in subjects), subjects
    bad = subprocess.run([*command, "--since", "yesterday"], capture_output=True, text=True)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_the_idle_agent_rechecks_one_dataset_a_pass_and_reports_rot(facility, admin_mail):
    one, _ = deliver_two(facility)
    facility.verify.recheck_days = 7
    (one / "a.tif").write_bytes(b"rotten")
    agent = Agent(facility)
    agent.run(once=True)  # one dataset checked
    journal = Journal(facility.journal_url)
    assert [e.kind for e in journal.recent_events(50)].count("recheck-failed") == 1
    assert journal.get_setting("recheck")["after_id"] == 1
    Agent(facility).run(once=True)  # the second
    Agent(facility).run(once=True)  # nothing left: the round closes
    state = journal.get_setting("recheck")
    assert state["after_id"] == 0 and state["at"]
    Agent(facility).run(once=True)  # not due again for 7 days
    assert [e.kind for e in journal.recent_events(50)].count("recheck-failed") == 1
    subjects = [m["Subject"] for m in admin_mail.to("admin@example.org")]
    assert any("alice/one no longer matches" in s for s in subjects), subjects
