"""Rules and the agent's after-delivery hook: what runs on what, recorded once, never raising."""

from __future__ import annotations

import pytest

from autotx_lib.config import PipelineRule
from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore
from autotx_lib.pipelines import pipeline_hooks
from autotx_lib.pipelines.rules import DatasetInfo, explain, explain_rule, folder_info
from tests.pipelines.conftest import delivered_dataset, pipeline_config

PLATE_FILES = {f"P1_{w}_s1_w1.tif": b"x" for w in ("A01", "A02", "B01")}


def test_each_condition_of_a_rule():
    info = DatasetInfo(user="alice", name="screen1", path="/store/alice/screen1",
                       instrument="scope-1", files=tuple(PLATE_FILES))
    assert explain_rule(PipelineRule(workflow="w"), info) == (True, "matches")
    assert explain_rule(PipelineRule(workflow="w", instruments=["scope-2"]), info) == \
        (False, "instrument 'scope-1' is not one of ['scope-2']")
    assert not explain_rule(PipelineRule(workflow="w", users=["bob"]), info)[0]
    assert explain_rule(PipelineRule(workflow="w", paths=["alice/screen*"]), info)[0]
    assert explain_rule(PipelineRule(workflow="w", paths=["/store/*/screen1"]), info)[0]
    assert explain_rule(PipelineRule(workflow="w", paths=["bob/*"]), info) == \
        (False, "alice/screen1 matches none of the paths ['bob/*']")
    assert explain_rule(PipelineRule(workflow="w", file_types=["TIF"]), info)[0]  # normalised
    assert explain_rule(PipelineRule(workflow="w", file_types=[".czi"]), info) == \
        (False, "no file of type .czi")
    assert explain_rule(PipelineRule(workflow="w", plate=True), info)[0]
    stack = DatasetInfo(user="alice", name="s", path="/s", files=("cell.ome.tif",))
    assert explain_rule(PipelineRule(workflow="w", plate=True), stack) == (False, "not a plate")
    assert explain_rule(PipelineRule(workflow="w", file_types=[".ome.tif"]), stack)[0]


def test_folder_info_reads_names_only(tmp_path):
    (tmp_path / "alice" / "run1" / "sub").mkdir(parents=True)
    (tmp_path / "alice" / "run1" / "sub" / "a.czi").write_bytes(b"")
    info = folder_info(tmp_path / "alice" / "run1")
    assert (info.user, info.name, info.files) == ("alice", "run1", ("a.czi",))


@pytest.fixture
def facility(tmp_path):
    rules = [{"workflow": "plate-qc", "plate": True},
             {"workflow": "previews", "file_types": [".tif"], "plate": False},
             {"workflow": "omero-import", "users": ["nobody"]}]
    config = pipeline_config(tmp_path, rules=rules)
    return config, Journal(config.journal_url)


def test_the_hook_records_the_runs_the_rules_ask_for_and_nothing_else(facility):
    config, journal = facility
    hooks = pipeline_hooks(config, journal, start_runner=False)
    assert len(hooks) == 1
    plate = delivered_dataset(config, journal, "screen1", PLATE_FILES)
    stack = delivered_dataset(config, journal, "stack1", {"cells.tif": b"x"})
    notes = delivered_dataset(config, journal, "notes", {"readme.txt": b"x"})
    for row in (plate, stack, notes):
        hooks[0](row)
    runs = {(r.dataset_id, r.workflow, r.initiator, r.status)
            for r in PipelineStore(journal).query(limit=10)}
    assert runs == {(plate.id, "plate-qc", "scope-1", "created"),
                    (stack.id, "previews", "scope-1", "created")}
    # a rule that matches nothing records nothing, and says why
    lines = explain(config.pipelines.rules, folder_info(notes.dest_path, user="alice"))
    assert [line["matched"] for line in lines] == [False, False, False]
    assert lines[2]["why"] == "user 'alice' is not one of ['nobody']"
    events = [e.message for e in journal.recent_events(10)]
    assert "alice/screen1: plate-qc run 1 due" in events


def test_two_agents_rules_producing_the_same_run_record_it_once(facility, tmp_path):
    config, journal = facility
    other = config.model_copy(update={"host_alias": "scope-2"})
    row = delivered_dataset(config, journal, "screen1", PLATE_FILES)
    pipeline_hooks(config, journal, start_runner=False)[0](row)
    pipeline_hooks(other, Journal(config.journal_url), start_runner=False)[0](row)
    runs = PipelineStore(journal).query(limit=10)
    assert [(r.workflow, r.initiator) for r in runs] == [("plate-qc", "scope-1")]


def test_the_hook_never_raises(facility, caplog):
    config, journal = facility
    broken = config.model_copy(update={"pipelines": config.pipelines.model_copy(
        update={"rules": [PipelineRule(workflow="not-installed")]})})
    row = delivered_dataset(config, journal, "screen1", PLATE_FILES)
    pipeline_hooks(broken, journal, start_runner=False)[0](row)  # logged, not raised
    assert "no workflow called 'not-installed' is installed" in caplog.text
    assert PipelineStore(journal).count() == 0


def test_no_rules_no_hook(tmp_path):
    config = pipeline_config(tmp_path)
    assert pipeline_hooks(config, start_runner=False) == []
