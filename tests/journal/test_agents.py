"""One journal, one owner: a journal records its agent and refuses every other one.

Two agents pointed at one database must never pick up, deliver or report each other's
datasets; the second one is refused at start (each agent keeps its own journal; the
facility view is the hub's job).
"""

from __future__ import annotations

import threading

import pytest
from typer.testing import CliRunner

from autotx_lib import journal as J
from autotx_lib.cli.main import app
from autotx_lib.config import Config
from autotx_lib.errors import JournalError
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.status import status

from .conftest import make_dataset, tree


def second_facility(first: Config, tmp_path, agent_id: str) -> Config:
    """Another instrument: its own folders, the same journal as ``first``."""
    root = tmp_path / agent_id
    (root / "storage" / "alice").mkdir(parents=True)
    return first.model_copy(update={"incoming": root / "incoming", "managed": root / "managed",
                                    "destination": root / "storage", "host_alias": agent_id,
                                    "agent_id": agent_id, "journal": first.journal_url})


def test_agent_id_defaults_to_the_host_alias(tmp_path):
    config = Config(incoming=tmp_path / "i", managed=tmp_path / "m", destination=tmp_path / "d",
                    host_alias="LSM880")
    assert config.agent_id == "LSM880"
    assert config.model_copy(update={"agent_id": "room-2"}).agent_id == "room-2"


def test_journal_records_its_agent_and_refuses_another(facility, tmp_path):
    make_dataset(facility.incoming, "alice", "exp", {"a": b"a"})
    assert Agent(facility).run(once=True).delivered
    assert Journal(facility.journal_url).owner == facility.agent_id == "test-pc"
    other = facility.model_copy(update={"agent_id": "LSM980"})
    with pytest.raises(JournalError) as refused:
        Agent(other)
    message = str(refused.value)
    assert "belongs to agent 'test-pc'" in message
    assert "point `journal` at this agent's own journal" in message
    assert "set agent_id = 'test-pc' if this machine replaced 'test-pc'" in message
    # the owner itself, a reader and the replacement machine are welcome
    Agent(facility)
    Journal(facility.journal_url, readonly=True, agent_id="test-pc")
    replacement = facility.model_copy(update={"host_alias": "new-pc", "agent_id": "test-pc"})
    Agent(replacement)


def test_run_command_refuses_another_agents_journal(facility, tmp_path):
    Journal(facility.journal_url, agent_id="someone-else").close()
    config = tmp_path / "autotx.toml"
    config.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                      f'destination = "{facility.destination}"\nagent_id = "test-pc"\n'
                      '[readiness]\nquiet_seconds = 0\n')
    make_dataset(facility.incoming, "alice", "exp", {"a": b"a"})
    result = CliRunner().invoke(app, ["run", "-c", str(config), "--once"])
    assert result.exit_code == 2, result.output
    assert "belongs to agent 'someone-else'" in result.output
    assert (facility.incoming / "alice" / "exp" / "a").exists()  # untouched


@pytest.mark.postgres
def test_two_agents_on_one_postgresql_never_touch_each_others_datasets(facility, tmp_path,
                                                                       postgres_url):
    first = facility.model_copy(update={"journal": postgres_url, "agent_id": "LSM880"})
    second = second_facility(first, tmp_path, "LSM980")
    make_dataset(first.incoming, "alice", "first-exp", {"a.tif": b"1" * 1000})
    make_dataset(second.incoming, "alice", "second-exp", {"b.tif": b"2" * 1000})
    assert Agent(first).run(once=True).delivered
    before = [tuple(r) for r in Journal(postgres_url).all_datasets()]

    with pytest.raises(JournalError, match="belongs to agent 'LSM880', not 'LSM980'"):
        Agent(second)
    # nothing of the second instrument was picked up, delivered or reported
    assert (second.incoming / "alice" / "second-exp" / "b.tif").read_bytes() == b"2" * 1000
    assert not (second.destination / "alice" / "second-exp").exists()
    assert [tuple(r) for r in Journal(postgres_url).all_datasets()] == before
    assert [d.name for d in status(first).history] == ["first-exp"]
    assert tree(first.destination / "alice" / "first-exp") == {"a.tif": b"1" * 1000}
    # the first agent goes on as before
    make_dataset(first.incoming, "alice", "first-again", {"c": b"c"})
    assert Agent(first).run(once=True).delivered


@pytest.mark.postgres
def test_two_agents_starting_at_once_on_a_new_postgresql_journal_one_wins(postgres_url):
    start, owners, refused = threading.Barrier(2), [], []

    def open_as(agent_id: str) -> None:
        start.wait()
        try:
            Journal(postgres_url, agent_id=agent_id).close()
            owners.append(agent_id)
        except JournalError as error:
            refused.append(str(error))

    threads = [threading.Thread(target=open_as, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(owners) == 1 and len(refused) == 1
    assert f"belongs to agent {owners[0]!r}" in refused[0]
    journal = Journal(postgres_url)
    assert journal.owner == owners[0]
    assert [e.message for e in journal.recent_events(10) if e.kind == "journal"] == \
        [f"this journal now belongs to agent {owners[0]!r}"]
    assert journal.datasets_in(J.ACTIVE_STATES) == []
