"""`autotx submit` (the library function): symbolic links never smuggle a folder in."""

from __future__ import annotations

import pytest

from autotx_lib.errors import SubmitError
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.submit import submit

from .conftest import make_dataset, tree


@pytest.fixture
def acquisitions(facility, tmp_path):
    """The instrument's data folder, the only submit root."""
    folder = tmp_path / "acquisitions"
    folder.mkdir()
    facility.submit_roots = [folder]
    return folder


def test_a_symlinked_parent_cannot_bring_in_data_from_outside_the_roots(facility,
                                                                       acquisitions, tmp_path):
    private = make_dataset(tmp_path, "private", "run1", {"secret.txt": b"not for transfer"})
    (acquisitions / "link").symlink_to(private.parent)
    with pytest.raises(SubmitError, match="outside the folders that may be submitted"):
        submit(facility, acquisitions / "link" / "run1", "alice")
    assert (private / "secret.txt").read_bytes() == b"not for transfer"  # not moved
    assert not (facility.incoming / "alice").exists()


def test_a_symlinked_parent_cannot_requeue_a_grace_original(facility, tmp_path):
    make_dataset(facility.incoming, "alice", "exp1", {"a.tif": b"pixels"})
    assert Agent(facility).run(once=True).delivered
    [original] = (facility.managed / "done" / "alice").iterdir()
    facility.submit_roots = []  # the default: incoming's parent, which holds managed/ too
    (tmp_path / "shortcut").symlink_to(original.parent)
    with pytest.raises(SubmitError, match="overlaps the agent's managed folder"):
        submit(facility, tmp_path / "shortcut" / original.name, "alice")
    assert (original / "a.tif").read_bytes() == b"pixels"
    assert not any((facility.incoming / "alice").iterdir())


def test_a_symlinked_parent_cannot_move_another_users_delivered_dataset(facility,
                                                                       acquisitions):
    (facility.destination / "bob").mkdir()
    delivered = make_dataset(facility.destination, "bob", "plate7", {"w1.tif": b"bob's"})
    (acquisitions / "bob").symlink_to(facility.destination / "bob")
    with pytest.raises(SubmitError, match="overlaps the agent's destination folder"):
        submit(facility, acquisitions / "bob" / "plate7", "alice")
    assert tree(delivered) == {"w1.tif": b"bob's"}


def test_a_symlinked_parent_cannot_take_another_users_incoming_folder(facility, acquisitions):
    waiting = make_dataset(facility.incoming, "bob", "run3", {"x.tif": b"bob's"})
    (acquisitions / "in").symlink_to(facility.incoming)
    with pytest.raises(SubmitError, match="overlaps the agent's incoming folder"):
        submit(facility, acquisitions / "in" / "bob" / "run3", "alice")
    assert tree(waiting) == {"x.tif": b"bob's"}


def test_a_submit_root_reached_through_a_symlink_still_works(facility, tmp_path):
    real = tmp_path / "disk1" / "data"
    run = make_dataset(real, "carol", "run9", {"img.tif": b"pixels"})
    (tmp_path / "data").symlink_to(real)  # /data -> /disk1/data, as on many PCs
    facility.submit_roots = [tmp_path / "data"]
    queued = submit(facility, tmp_path / "data" / "carol" / "run9", "alice")
    assert queued == facility.incoming / "alice" / "run9"
    assert tree(queued) == {"img.tif": b"pixels"} and not run.exists()
