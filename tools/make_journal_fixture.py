"""Write a journal with the release before migrations (commit 451bb5e), for upgrade tests.

The fixture tests/journal/fixtures/journal-451bb5e.sqlite was made with that release's
own code, so the upgrade test reads exactly what such an agent left on disk:

    mkdir /tmp/old-release
    git archive 451bb5e | tar -x -C /tmp/old-release
    PYTHONPATH=/tmp/old-release python tools/make_journal_fixture.py \
        tests/journal/fixtures/journal-451bb5e.sqlite

It runs the old agent once over a small facility (a dataset delivered, one for a user
without a destination folder), with an SMTP server that does not answer (the mails stay
in the outbox), runs two post-delivery jobs (one finishes, one fails and waits for a
retry), suspends and resumes transfers, sets a bandwidth cap, and adds a quarantined and
a queued dataset through that release's Journal API.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path


def main(target: Path) -> None:
    # pipelines.jobs is the old release's JobRunner (removed since: ruff sorts it as unknown)
    import autotx_lib  # noqa: I001
    from autotx_lib import journal as J
    from autotx_lib.config import Config
    from autotx_lib.journal import Journal
    from autotx_lib.pipelines.jobs import JobRunner
    from autotx_lib.transfer import control
    from autotx_lib.transfer.agent import Agent

    if (Path(autotx_lib.__file__).parent / "journal").is_dir():
        sys.exit("run this with the old release first on PYTHONPATH (see the docstring)")
    root = Path(tempfile.mkdtemp(prefix="autotx-fixture-"))
    try:
        (root / "storage" / "alice").mkdir(parents=True)
        config = Config(incoming=root / "incoming", managed=root / "managed",
                        destination=root / "storage", host_alias="old-microscope",
                        readiness={"quiet_seconds": 0},
                        gate={"max_cpu_percent": 100, "min_available_memory_mb": 0},
                        email={"smtp_host": "127.0.0.1", "smtp_port": 9,  # nobody answers
                               "admin": "admin@example.org",
                               "user_address_pattern": "{user}@example.org"})
        for user, name in (("alice", "plate-1"), ("bob", "no-folder")):
            folder = root / "incoming" / user / name
            (folder / "sub").mkdir(parents=True)
            (folder / "a.tif").write_bytes(os.urandom(3000))
            (folder / "sub" / "b.txt").write_text(f"{user} {name}\n")
        summary = Agent(config).run(once=True)
        assert summary.delivered, summary

        journal = Journal(config.journal_url)
        done = journal.datasets_in([J.DONE])[0]
        journal.add_job("previews", done.id, {"size": 256})
        journal.add_job("omero-import", done.id, {"project": "p"})

        def fails(job):
            raise RuntimeError("OMERO server unreachable")

        def finishes(job):
            return {"images": 2}

        JobRunner(journal, {"previews": finishes, "omero-import": fails}).run_once()

        now = J.utcnow()
        journal.add_dataset(user="carol", name="broken", stamp="2026-11-30_10-00-00",
                            state=J.ERROR, incoming_path=str(root / "incoming/carol/broken"),
                            processing_path=str(root / "managed/processing/x__carol__broken"),
                            final_path=str(root / "managed/error/carol/x__broken"),
                            algorithm="xxh3_128", total_files=1, total_bytes=10,
                            error="a symbolic link inside: link.tif", finished_at=now)
        queued = journal.add_dataset(
            user="alice", name="waiting", stamp="2026-11-30_11-00-00", state=J.QUEUED,
            incoming_path=str(root / "incoming/alice/waiting"),
            processing_path=str(root / "managed/processing/y__alice__waiting"),
            algorithm="xxh3_128", total_files=2, total_bytes=20, attempts=3,
            error="destination unreachable",
            next_attempt_at=now + dt.timedelta(days=3650))  # not due while tests run
        journal.add_files(queued, [("one.tif", 10, 1_700_000_000_000_000_000),
                                   ("two.tif", 10, 1_700_000_000_000_000_001)])
        control.suspend(journal, "calibration")
        control.resume(journal)
        control.set_bandwidth(journal, 50)
        journal.close()

        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        source, copy = sqlite3.connect(root / "managed" / "autotx.sqlite"), sqlite3.connect(target)
        source.backup(copy)  # the agent's engine may still hold the file: copy it whole
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
        copy.close()
        source.close()
        print(f"wrote {target}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else
              "tests/journal/fixtures/journal-451bb5e.sqlite"))
