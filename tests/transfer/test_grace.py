"""The grace area on real folders: ages, expiry, and the purge that only removes verified data."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.config import Config
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent, Progress
from autotx_lib.transfer.copy import hash_file, verify_manifest
from autotx_lib.transfer.grace import PurgeProgress, grace_report, purge

from .conftest import make_dataset

runner = CliRunner()
LATER = dt.timedelta(days=45)  # past the default grace period of 30 days


def deliver(config: Config, *names: str, user: str = "alice") -> Journal:
    for name in names:
        make_dataset(config.incoming, user, name, {"img.tif": os.urandom(3000),
                                                   "sub/meta.xml": b"<OME/>"})
    summary = Agent(config).run(once=True)
    assert len(summary.delivered) == len(names), summary
    return Journal(config.journal_url)


def by_name(entries):
    return {e.name: e for e in entries}


def hand_made(config: Config, user: str, folder: str, size: int = 500) -> Path:
    path = config.managed / "done" / user / folder
    path.mkdir(parents=True)
    (path / "data.bin").write_bytes(b"x" * size)
    return path


def test_age_comes_from_the_stamp_or_the_folder_time_when_the_journal_does_not_know(facility):
    hand_made(facility, "bob", "2020-01-01_10-00-00__old-run", size=1234)
    loose = hand_made(facility, "bob", "no-stamp-here")
    week_ago = (dt.datetime.now() - dt.timedelta(days=7)).timestamp()
    os.utime(loose, (week_ago, week_ago))
    now = dt.datetime(2020, 3, 1, 10, 0, 0)

    report = grace_report(facility, now=now)

    entries = by_name(report.entries)
    old = entries["old-run"]
    assert old.age_source == "stamp" and old.stamp == "2020-01-01_10-00-00"
    assert old.age_days == pytest.approx(60.0) and old.expired
    assert old.size_bytes == 1234 and old.file_count == 1 and old.user == "bob"
    assert old.dest_path is None and old.dataset_id is None
    fresh = grace_report(facility).entries
    assert by_name(fresh)["no-stamp-here"].age_source == "mtime"
    assert by_name(fresh)["no-stamp-here"].age_days == pytest.approx(7.0, abs=0.01)
    assert not by_name(fresh)["no-stamp-here"].expired


def test_delivered_datasets_age_from_delivery_and_expire_after_the_grace_period(facility):
    journal = deliver(facility, "exp1", "exp2")
    hand_made(facility, "bob", "2020-01-01_10-00-00__old-run")

    now_report = grace_report(facility, journal)
    later = grace_report(facility, journal, now=dt.datetime.now() + LATER)

    assert {e.name for e in now_report.entries} == {"exp1", "exp2", "old-run"}
    assert {e.name for e in now_report.expired} == {"old-run"}
    assert {e.name for e in later.expired} == {"exp1", "exp2", "old-run"}
    exp1 = by_name(later.entries)["exp1"]
    assert exp1.age_source == "delivered" and exp1.age_days == pytest.approx(45, abs=0.01)
    assert exp1.dest_path == str(facility.destination / "alice" / "exp1")
    assert exp1.manifest_path.endswith("autotx-manifest.xxh128") and exp1.file_count == 2
    assert list(later.by_user) == ["alice", "bob"] and len(later.by_user["alice"]) == 2
    assert later.total_bytes == sum(e.size_bytes for e in later.entries) > 6000
    assert later.expired_bytes == later.total_bytes
    assert json.loads(json.dumps(later.to_dict()))["expired_count"] == 3
    facility.grace_period_days = 60
    assert grace_report(facility, journal, now=dt.datetime.now() + LATER).expired[0].name \
        == "old-run"


def test_an_empty_or_missing_grace_area_gives_an_empty_report(facility):
    report = grace_report(facility)
    assert report.entries == [] and report.total_bytes == 0 and report.expired == []


def test_purge_dry_run_lists_candidates_and_deletes_nothing(facility):
    journal = deliver(facility, "exp1", "exp2")
    before = sorted(p for p in (facility.managed / "done").rglob("*"))

    result = purge(facility, 30, journal=journal, now=dt.datetime.now() + LATER)

    assert result.dry_run and {e.name for e in result.candidates} == {"exp1", "exp2"}
    assert result.removed == [] and result.skipped == [] and result.freed_bytes == 0
    assert sorted(p for p in (facility.managed / "done").rglob("*")) == before
    assert purge(facility, 30, journal=journal).candidates == []  # nothing that old yet
    assert not any(e.kind == "grace-purged" for e in journal.recent_events(50))


def test_purge_removes_only_originals_whose_delivered_copy_verifies(facility):
    journal = deliver(facility, "good", "tampered", "copy-gone", "extra-file")
    dest = facility.destination / "alice"
    (dest / "tampered" / "img.tif").write_bytes(os.urandom(3000))  # same size, other bytes
    shutil.rmtree(dest / "copy-gone")
    report = grace_report(facility, journal)
    extra = by_name(report.entries)["extra-file"]
    (Path(extra.path) / "notes-added-later.txt").write_text("not in the delivered copy")
    unknown = hand_made(facility, "bob", "2020-01-01_10-00-00__unknown")

    result = purge(facility, 30, dry_run=False, journal=journal,
                   now=dt.datetime.now() + LATER)

    assert [e.name for e in result.removed] == ["good"]
    assert not Path(by_name(report.entries)["good"].path).exists()
    assert (dest / "good" / "img.tif").exists()  # the delivered copy is never touched
    reasons = {s.entry.name: s.reason for s in result.skipped}
    assert set(reasons) == {"tampered", "copy-gone", "extra-file", "unknown"}
    assert reasons["tampered"] == ("img.tif in the delivered copy differs from the journal's "
                                   "digest (changed or damaged since delivery)")
    assert "is missing" in reasons["copy-gone"]
    assert reasons["extra-file"] == ("notes-added-later.txt in the original is not in the "
                                     "journal (never delivered)")
    assert "journal has no record" in reasons["unknown"]
    for name in ("tampered", "copy-gone", "extra-file"):
        assert Path(by_name(report.entries)[name].path).is_dir()
    assert unknown.is_dir() and not result.ok and result.freed_bytes > 0
    events = journal.recent_events(50)
    assert [e.kind for e in events].count("grace-purged") == 1
    assert [e.kind for e in events].count("grace-kept") == 4


def test_purge_dry_run_already_names_cheap_reasons_to_keep(facility):
    journal = deliver(facility, "exp1")
    shutil.rmtree(facility.destination / "alice" / "exp1")
    result = purge(facility, 0, journal=journal)
    assert [s.entry.name for s in result.skipped] == ["exp1"] and result.removed == []


# --- what purge compares: the journal, the manifest, the original and the delivered copy ---


def only_dataset(config: Config, journal: Journal):
    """The one delivered dataset: (grace entry, original folder, delivered copy, manifest)."""
    [entry] = grace_report(config, journal).entries
    return entry, Path(entry.path), Path(entry.dest_path), Path(entry.manifest_path)


def purge_kept(config: Config, journal: Journal, *, dry_run: bool = False) -> list[str]:
    """Purge everything; the reasons the one dataset was kept (its original must remain)."""
    result = purge(config, 0, dry_run=dry_run, journal=journal)
    assert result.removed == [] and len(result.skipped) == 1, result
    assert Path(result.skipped[0].entry.path).is_dir()
    return result.skipped[0].reasons


def test_purge_keeps_the_original_when_a_copy_and_its_manifest_line_were_both_replaced(
        facility):
    journal = deliver(facility, "exp1")
    entry, original, copy, manifest = only_dataset(facility, journal)
    (copy / "img.tif").write_bytes(os.urandom(3000))
    forged = hash_file(copy / "img.tif", entry.algorithm)
    lines = [f"{forged}  img.tif" if line.endswith("  img.tif") else line
             for line in manifest.read_text().splitlines()]
    manifest.write_text("\n".join(lines) + "\n")
    assert verify_manifest(copy, manifest, entry.algorithm) == []  # the forgery is consistent

    reasons = purge_kept(facility, journal)

    assert any(r.startswith("img.tif: the manifest's digest differs from the journal's")
               for r in reasons), reasons
    assert any("changed since delivery" in r for r in reasons), reasons  # the manifest file


def test_purge_keeps_an_original_that_grew_after_delivery_even_in_a_dry_run(facility):
    journal = deliver(facility, "exp1")
    _, original, _, _ = only_dataset(facility, journal)
    with open(original / "img.tif", "ab") as grown:
        grown.write(b"new bytes" * 50)

    for dry_run in (True, False):
        assert purge_kept(facility, journal, dry_run=dry_run) == [
            "img.tif in the original changed since it was copied (size 3000 -> 3450 bytes)"]


def test_purge_keeps_an_original_changed_after_it_was_verified_and_before_delivery(facility):
    make_dataset(facility.incoming, "alice", "exp1", {"img.tif": os.urandom(3000)})
    changed = []

    def change_the_source_once_copied(progress: Progress) -> None:
        if progress.files_done == progress.files_total and not changed:
            [processing] = (facility.managed / "processing").iterdir()
            source = processing / "img.tif"
            source.write_bytes(os.urandom(3200))  # the software rewrote it
            changed.append(source)

    assert len(Agent(facility, on_progress=change_the_source_once_copied)
               .run(once=True).delivered) == 1
    journal = Journal(facility.journal_url)
    _, original, copy, _ = only_dataset(facility, journal)
    # the agent noticed the change before the final rename and copied the file again ...
    assert changed and (original / "img.tif").read_bytes() == (copy / "img.tif").read_bytes()
    assert purge(facility, 0, journal=journal).skipped == []  # a dry run would remove it
    # ... and a change it could not see (after the rename) keeps the original
    (original / "img.tif").write_bytes(os.urandom(3300))
    assert purge_kept(facility, journal) == [
        "img.tif in the original changed since it was copied (size 3200 -> 3300 bytes)"]


def test_purge_hashes_the_original_even_when_size_and_modified_time_were_kept(facility):
    journal = deliver(facility, "exp1")
    _, original, _, _ = only_dataset(facility, journal)
    before = (original / "img.tif").stat()
    (original / "img.tif").write_bytes(os.urandom(3000))
    os.utime(original / "img.tif", ns=(before.st_atime_ns, before.st_mtime_ns))

    assert purge(facility, 0, journal=journal).skipped == []  # a dry run does not hash
    assert purge_kept(facility, journal) == [
        "img.tif in the original differs from the journal's digest "
        "(changed since it was copied)"]


def test_purge_keeps_the_original_when_a_file_was_added_to_the_delivered_copy(facility):
    journal = deliver(facility, "exp1")
    _, _, copy, _ = only_dataset(facility, journal)
    (copy / "sub" / "added.txt").write_text("not delivered by autotx")

    for dry_run in (True, False):
        assert purge_kept(facility, journal, dry_run=dry_run) == [
            "sub/added.txt in the delivered copy is not in the journal "
            "(added after delivery)"]


def test_purge_keeps_the_original_when_the_manifest_lacks_a_journal_file(facility):
    journal = deliver(facility, "exp1")
    _, _, _, manifest = only_dataset(facility, journal)
    lines = manifest.read_text().splitlines()
    manifest.write_text("".join(f"{line}\n" for line in lines
                                if not line.endswith("  sub/meta.xml")))

    reasons = purge_kept(facility, journal, dry_run=True)

    assert "sub/meta.xml is in the journal but not in the delivered copy's manifest" \
        in reasons, reasons


def test_purge_keeps_the_original_when_one_of_its_files_is_missing(facility):
    journal = deliver(facility, "exp1")
    _, original, _, _ = only_dataset(facility, journal)
    (original / "sub" / "meta.xml").unlink()

    assert purge_kept(facility, journal, dry_run=True) == [
        "sub/meta.xml is missing from the original"]


def test_purge_keeps_the_original_when_the_journal_has_no_digest_for_a_file(facility):
    journal = deliver(facility, "exp1")
    entry, _, _, _ = only_dataset(facility, journal)
    journal.reset_files(entry.dataset_id, ["img.tif"])

    reasons = purge_kept(facility, journal, dry_run=True)

    assert reasons[0] == "img.tif: the journal has no digest for it (never verified)", reasons


def test_purge_reports_hashing_progress_through_a_callback(facility):
    journal = deliver(facility, "exp1", "exp2")
    seen: list[PurgeProgress] = []

    result = purge(facility, 0, dry_run=False, journal=journal, on_progress=seen.append)

    assert len(result.removed) == 2 and result.hashed
    assert [p.files_done for p in seen] == list(range(1, 9))  # 2 datasets x 2 files x 2 sides
    assert {p.files_total for p in seen} == {8}
    assert seen[-1].bytes_done == seen[-1].bytes_total == 2 * result.freed_bytes


def test_purge_keeps_an_original_that_gained_a_file_while_it_was_being_hashed(facility):
    journal = deliver(facility, "exp1")
    _, original, _, _ = only_dataset(facility, journal)

    def add_a_file_once(progress: PurgeProgress) -> None:
        if progress.files_done == 1:
            (original / "late.tif").write_bytes(b"saved while the purge was hashing")

    result = purge(facility, 0, dry_run=False, journal=journal, on_progress=add_a_file_once)

    assert result.removed == [] and (original / "late.tif").is_file()
    assert result.skipped[0].reasons == [
        "late.tif in the original is not in the journal (never delivered)"]


def test_purge_refuses_a_negative_age(facility):
    with pytest.raises(ValueError, match="0 or more"):
        purge(facility, -1)


# --- the command ------------------------------------------------------------------------


def write_config(config: Config, path: Path) -> Path:
    path.write_text(f'incoming = "{config.incoming}"\nmanaged = "{config.managed}"\n'
                    f'destination = "{config.destination}"\ngrace_period_days = 30\n')
    return path


def test_grace_command_shows_the_report_and_json(facility, tmp_path):
    deliver(facility, "exp1")
    hand_made(facility, "bob", "2020-01-01_10-00-00__old-run")
    config = write_config(facility, tmp_path / "autotx.toml")

    shown = runner.invoke(app, ["grace", "-c", str(config)])
    assert shown.exit_code == 0, shown.output
    assert "exp1" in shown.output and "old-run" in shown.output and "bob" in shown.output
    assert "1 past the grace period" in shown.output and "purge" in shown.output

    as_json = runner.invoke(app, ["grace", "-c", str(config), "--json"])
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert {Path(e["path"]).name.split("__")[-1] for e in data["entries"]} == {"exp1", "old-run"}
    assert data["expired_count"] == 1


def test_grace_purge_command_lists_without_yes_and_exits_1_when_something_is_kept(facility,
                                                                                 tmp_path):
    deliver(facility, "good", "tampered")
    (facility.destination / "alice" / "tampered" / "img.tif").write_bytes(os.urandom(3000))
    config = write_config(facility, tmp_path / "autotx.toml")
    done = facility.managed / "done" / "alice"

    listed = runner.invoke(app, ["grace", "purge", "-c", str(config), "--older-than", "0"])
    assert listed.exit_code == 0, listed.output
    assert "would remove" in listed.output and "Nothing was deleted" in listed.output
    assert len(list(done.iterdir())) == 2

    purged = runner.invoke(app, ["grace", "purge", "-c", str(config), "--older-than", "0",
                                 "--yes"])
    assert purged.exit_code == 1, purged.output
    assert "removed:" in purged.output and "__good" in purged.output
    assert "kept:" in purged.output and "img.tif in the delivered copy differs from the " \
        "journal's digest" in purged.output
    assert [p.name.split("__")[-1] for p in done.iterdir()] == ["tampered"]

    again = runner.invoke(app, ["grace", "purge", "-c", str(config), "--older-than", "0",
                                "--yes", "--json"])
    assert again.exit_code == 1 and json.loads(again.stdout)["skipped"][0]["reason"]


def test_grace_purge_dry_run_names_what_it_would_keep_and_what_it_did_not_hash(facility,
                                                                             tmp_path):
    deliver(facility, "exp1")
    [original] = (facility.managed / "done" / "alice").iterdir()
    (original / "sub" / "meta.xml").write_bytes(b"<OME/> edited")
    config = write_config(facility, tmp_path / "autotx.toml")

    listed = runner.invoke(app, ["grace", "purge", "-c", str(config), "--older-than", "0"])

    assert listed.exit_code == 1, listed.output
    assert (f"would keep: {original}: sub/meta.xml in the original changed since it was "
            "copied (size 6 -> 13 bytes)") in listed.output
    assert "Compared without hashing" in listed.output and "hashed" in listed.output
    assert original.is_dir()


@pytest.mark.parametrize("args", [
    ["grace"],                                                   # no config
    ["grace", "-c", "/no/such/autotx.toml"],
    ["grace", "purge", "-c", "/no/such/autotx.toml", "--older-than", "3"],
    ["grace", "purge", "-c", "CONFIG", "--older-than", "-1"],
    ["grace", "purge", "-c", "CONFIG", "--older-than", "soon"],
    ["grace", "purge", "-c", "CONFIG"],                          # --older-than is required
])
def test_grace_commands_exit_2_on_bad_input_and_delete_nothing(facility, tmp_path, args):
    deliver(facility, "exp1")
    config = write_config(facility, tmp_path / "autotx.toml")
    result = runner.invoke(app, [str(config) if a == "CONFIG" else a for a in args] + ["--yes"]
                           if "purge" in args else
                           [str(config) if a == "CONFIG" else a for a in args])
    assert result.exit_code == 2, result.output
    assert len(list((facility.managed / "done" / "alice").iterdir())) == 1
