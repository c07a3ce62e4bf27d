"""Delivery rows: a change of one destination's copy is a change of its dataset."""

from __future__ import annotations

import datetime as dt

from autotx_lib import journal as J
from autotx_lib.journal import Journal, utcnow


def test_a_delivery_change_moves_its_dataset_past_a_followers_cursor(tmp_path):
    """The hub reporter follows datasets by updated_at: an optional destination catching up
    days later changes only its delivery row, and must still be pushed."""
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    long_ago = utcnow() - dt.timedelta(days=3)
    dataset = journal.add_dataset(user="alice", name="exp", stamp="2026-11-28_10-00-00",
                                  state=J.DONE, incoming_path="/in/alice/exp",
                                  processing_path="/m/processing/x", algorithm="xxh3_128",
                                  created_at=long_ago, updated_at=long_ago)
    [_, backup] = journal.ensure_deliveries(dataset, [("storage", True), ("backup", False)])
    journal.update_dataset(dataset, state=J.DONE)
    cursor = (journal.dataset(dataset).updated_at, dataset)
    assert journal.datasets_changed_after(cursor[0], cursor, 10) == []  # seen: nothing new
    journal.update_delivery(backup.id, state="delivered", delivered_at=utcnow())
    assert [r.id for r in journal.datasets_changed_after(cursor[0], cursor, 10)] == [dataset]
