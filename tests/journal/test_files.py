"""File rows: recording verified files in batches, and the reads the agent makes of them."""

from __future__ import annotations

import pytest

from autotx_lib.journal import Journal


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'autotx.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    journal = Journal(url)
    yield journal
    journal.close()


def new_dataset(journal: Journal, name: str) -> int:
    return journal.add_dataset(user="alice", name=name, stamp="20261201-1200", state="copying",
                               incoming_path=f"/in/{name}", processing_path=f"/p/{name}",
                               algorithm="xxh3_128")


def test_mark_verified_records_every_row_of_a_batch_and_only_its_dataset(journal):
    ours, other = new_dataset(journal, "ours"), new_dataset(journal, "other")
    names = [f"plate/r{i // 50:02d}/f{i:04d}.tif" for i in range(1200)]
    journal.add_files(ours, [(name, 10, 1) for name in names])
    journal.add_files(other, [(name, 10, 1) for name in names])  # the same relpaths
    results = [{"relpath": name, "digest": f"{i:032x}", "size": 100 + i, "mtime_ns": 7 + i,
                "copies": 1 + i % 3} for i, name in enumerate(names)]

    journal.mark_verified(ours, results[:700], 700, 700)
    journal.mark_verified(ours, results[700:], 1200, 1200)
    journal.mark_verified(ours, [dict(results[5], copies=2)], 1200, 1200)  # copied again

    rows = {r.relpath: r for r in journal.files_of(ours)}
    assert len(rows) == 1200
    for i, name in enumerate(names):
        row = rows[name]
        expected_copies = 1 + i % 3 + (2 if i == 5 else 0)  # copies add up
        assert (row.verified, row.digest, row.size, row.mtime_ns, row.copies) == \
            (True, f"{i:032x}", 100 + i, 7 + i, expected_copies), name
    assert not any(r.verified or r.digest for r in journal.files_of(other))
    dataset = journal.dataset(ours)
    assert (dataset.copied_files, dataset.copied_bytes) == (1200, 1200)


def test_mark_verified_with_no_rows_still_records_progress(journal):
    dataset = new_dataset(journal, "empty-batch")
    journal.add_files(dataset, [("a.tif", 1, 1)])
    journal.mark_verified(dataset, [], 5, 0)
    assert journal.dataset(dataset).copied_bytes == 5
    assert not journal.files_of(dataset)[0].verified


def test_verified_filter_and_any_verified(journal):
    dataset = new_dataset(journal, "filter")
    journal.add_files(dataset, [(name, 1, 1) for name in ("c.tif", "a.tif", "b.tif")])
    assert journal.any_verified(dataset) is False
    assert journal.files_of(dataset, verified=True) == []

    journal.mark_verified(dataset, [{"relpath": "b.tif", "digest": "d", "size": 1,
                                     "mtime_ns": 1, "copies": 1}], 1, 1)

    assert journal.any_verified(dataset) is True
    assert [r.relpath for r in journal.files_of(dataset, verified=True)] == ["b.tif"]
    assert [r.relpath for r in journal.files_of(dataset, verified=False)] == ["a.tif", "c.tif"]
    journal.reset_files(dataset)
    assert journal.any_verified(dataset) is False
