"""OMERO helpers: the pure parts without omero-py; a real server when OMERO_HOST is set."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
import yaml

from autotx_lib.errors import MissingDependencyError
from autotx_lib.imaging import omero as om

HAS_OMERO = importlib.util.find_spec("omero") is not None
SERVER = {k: os.environ.get(k) for k in ("OMERO_HOST", "OMERO_USER", "OMERO_PASSWORD")}


def _server_skip_reason() -> str | None:
    if not HAS_OMERO:
        return ("omero-py is not installed (the optional 'omero' extra): run "
                "`python3 tools/setup_omero.py` to test against a server")
    missing = [k for k, v in SERVER.items() if not v]
    if missing:
        return (f"no OMERO server configured ({', '.join(missing)} not set); set OMERO_HOST, "
                "OMERO_USER and OMERO_PASSWORD (and OMERO_PORT) to run the end-to-end import tests")
    return None


requires_omero_server = pytest.mark.skipif(_server_skip_reason() is not None,
                                           reason=_server_skip_reason() or "")

ROW = {"id": 7, "user": "alice", "name": "run 1", "algorithm": "xxh3_128",
       "manifest_digest": "ab" * 16, "started_at": dt.datetime(2026, 5, 1, 9, 0, 0),
       "finished_at": dt.datetime(2026, 5, 1, 9, 5, 30, 123), "total_files": 3,
       "total_bytes": 1234, "dest_path": "/mnt/storage/alice/run 1"}


# --- connection settings ----------------------------------------------------------


def test_connection_values_come_from_arguments_then_environment_then_config():
    env = {"OMERO_HOST": "env-host", "OMERO_USER": "env-user", "OMERO_PASSWORD": "env-pw",
           "OMERO_PORT": "14064"}
    section = {"host": "cfg-host", "user": "cfg-user", "port": 4444, "group": "lab",
               "secure": False}
    s = om.resolve_connection(settings=section, environ=env)
    assert (s.host, s.user, s.password, s.port, s.group, s.secure) == \
        ("env-host", "env-user", "env-pw", 14064, "lab", False)
    s = om.resolve_connection(host="arg-host", user="arg-user", password="arg-pw", port=1,
                              settings=section, environ=env)
    assert (s.host, s.user, s.password, s.port) == ("arg-host", "arg-user", "arg-pw", 1)
    s = om.resolve_connection(settings=dict(section, password_env="MY_PW"),
                              environ={"MY_PW": "from-env-var"})
    assert (s.host, s.user, s.password, s.port) == ("cfg-host", "cfg-user", "from-env-var", 4444)


def test_password_file_and_never_shown(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    s = om.resolve_connection(settings={"host": "h", "user": "u", "password_file": str(secret),
                                        "password_env": None}, environ={})
    assert s.password == "s3cret-value"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)


def test_missing_values_are_all_named_without_echoing_the_password():
    with pytest.raises(om.OmeroSettingsError) as info:
        om.resolve_connection(password="hunter2", port=70000, environ={})
    text = str(info.value)
    assert "no host" in text and "no user" in text and "port 70000" in text
    assert "hunter2" not in text
    assert info.value.retryable is False


def test_unreadable_password_file_says_where(tmp_path):
    with pytest.raises(om.OmeroSettingsError, match="password file .*missing"):
        om.resolve_connection(settings={"host": "h", "user": "u", "password_env": None,
                                        "password_file": str(tmp_path / "missing")}, environ={})


def test_unreachable_host_is_a_retryable_connection_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(om.OmeroConnectionError, match=f"127.0.0.1:{port}") as info:
        om._probe("127.0.0.1", port, timeout=2)
    assert info.value.retryable


@pytest.mark.skipif(HAS_OMERO, reason="omero-py is installed; this checks the message without it")
def test_connect_without_the_extra_says_how_to_install_it():
    with pytest.raises(MissingDependencyError, match="tools/setup_omero.py"), \
            om.connect(host="h", user="u", password="p"):
        pass


def test_auth_error_text_points_at_credentials_not_the_password():
    error = om.OmeroAuthError("omero.example.org", "ann")
    assert "OMERO_PASSWORD" in str(error) and not error.retryable


# --- targets ------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, names, object_id, cli", [
    ("Dataset:id:12", "Dataset", (), 12, "Dataset:id:12"),
    ("Dataset:12", "Dataset", (), 12, "Dataset:id:12"),
    ("Dataset:name:run 1", "Dataset", ("run 1",), None, "Dataset:name:run 1"),
    ("Screen:name:plates", "Screen", ("plates",), None, "Screen:name:plates"),
    ("Screen:id:3", "Screen", (), 3, "Screen:id:3"),
    ("alice/run1", "Project/Dataset", ("alice", "run1"), None, None),
])
def test_parse_target(text, kind, names, object_id, cli):
    spec = om.parse_target(text)
    assert (spec.kind, spec.names, spec.id) == (kind, names, object_id)
    if cli is None:
        with pytest.raises(om.OmeroSettingsError, match="ensure_container"):
            spec.cli_target()
        assert spec.with_id(5).cli_target() == "Dataset:id:5"
    else:
        assert spec.cli_target() == cli


@pytest.mark.parametrize("bad", ["", "   ", "Dataset:id:x", "Image:id:3", "a/b/c", True, None,
                                 0, -4])
def test_bad_targets_are_refused(bad):
    with pytest.raises(om.OmeroSettingsError):
        om.parse_target(bad)


@pytest.mark.parametrize("kind, names", [("Project/Dataset", ("only one",)),
                                         ("Screen", ("a", "b")), ("Dataset", ("",)),
                                         ("Plate", ("x",)), ("Dataset", ("x" * 300,)),
                                         ("Dataset", ("line\nbreak",))])
def test_bad_container_specs(kind, names):
    with pytest.raises(om.OmeroSettingsError):
        om.ContainerSpec(kind, names)


def test_target_rule_templates():
    rule = {"target": "auto", "project": "{user}", "dataset": "{date} {dataset}",
            "screen": "{instrument} plates"}
    row = dict(ROW, instrument="scope-3")
    assert om.target_for(rule, row) == om.ContainerSpec("Project/Dataset",
                                                        ("alice", "2026-05-01 run 1"))
    assert om.target_for(rule, row, is_plate=True) == om.ContainerSpec("Screen",
                                                                       ("scope-3 plates",))
    assert om.target_for(dict(rule, target="dataset"), row).kind == "Dataset"
    assert om.target_for(dict(rule, target="screen"), row).names == ("scope-3 plates",)
    with pytest.raises(om.OmeroSettingsError, match="project"):
        om.target_for(dict(rule, target="project"), row)
    with pytest.raises(om.OmeroSettingsError, match=r"\{usr\}"):
        om.target_for(dict(rule, project="{usr}"), row)
    with pytest.raises(om.OmeroSettingsError):  # the template fills to nothing
        om.target_for(rule, dict(row, user=""))


def test_plate_detection_on_real_folders(sampledata: Path):
    hcs = sampledata / "hcs"
    assert om.looks_like_plate(["SPW&plates=1&plateRows=8&plateCols=12&fields=2.fake"])
    assert om.looks_like_plate((hcs / "ImageXpress_9987_Plate_3435").rglob("*"))
    assert om.looks_like_plate((hcs / "Cellomics_ExampleHuman_D03").rglob("*"))
    assert om.looks_like_plate((hcs / "CV8000_metadata_only").rglob("*"))
    assert not om.looks_like_plate((sampledata / "ome-tiff").rglob("*"))
    assert not om.looks_like_plate(["image&sizeZ=3.fake", "notes.txt"])
    assert not om.looks_like_plate([])


# --- the import command and its output ------------------------------------------------


def test_import_arguments_use_the_session_never_a_password(tmp_path):
    args = om.import_arguments([tmp_path / "a.tif", "-odd.tif"], om.ContainerSpec(
        "Project/Dataset", ("alice", "run1"), 42), host="omero.example.org", port=4064,
        session_key="abc-123", transfer="ln_s", name="nice name", output_file=tmp_path / "o",
        errs_file=tmp_path / "e")
    assert args[:7] == ["import", "-s", "omero.example.org", "-p", "4064", "-k", "abc-123"]
    assert args[args.index("-T") + 1] == "Dataset:id:42"
    assert args[args.index("--output") + 1] == "yaml"
    assert args[args.index("--transfer") + 1] == "ln_s"
    assert args[args.index("-n") + 1] == "nice name"
    assert args[args.index("--file") + 1] == str(tmp_path / "o")
    assert args[args.index("--errs") + 1] == str(tmp_path / "e")
    assert args[-2:] == [str(tmp_path / "a.tif"), os.path.abspath("-odd.tif")]
    assert not any(a in ("-w", "--password") for a in args)
    plain = om.import_arguments(["/d/x.fake"], "Screen:name:plates", host="h", session_key="k")
    assert "--transfer" not in plain and plain[plain.index("-T") + 1] == "Screen:name:plates"


@pytest.mark.parametrize("kwargs, match", [
    ({"paths": []}, "no paths"),
    ({"transfer": "copy"}, "transfer 'copy'"),
    ({"session_key": ""}, "session key"),
    ({"target": "alice/run1"}, "ensure_container"),
    ({"host": ""}, "host"),
])
def test_import_arguments_refuse_bad_input(kwargs, match):
    base = {"paths": ["/d/a.tif"], "target": "Dataset:id:1", "host": "h", "session_key": "k"}
    base.update(kwargs)
    paths, target = base.pop("paths"), base.pop("target")
    with pytest.raises(om.OmeroSettingsError, match=match):
        om.import_arguments(paths, target, **base)


def test_parse_import_output():
    text = ("---\n- path: \"/data/a.fake\"\n  Fileset: [12]\n  Image: [51, 52]\n  Plate: [7]\n"
            "- path: \"/data/b.tif\"\n  Fileset: [13]\n  Image: [53]\n")
    assert om.parse_import_output(text) == {"Fileset": [12, 13], "Image": [51, 52, 53],
                                            "Plate": [7]}
    assert om.parse_import_output("") == {}
    assert om.parse_import_output("---\n- {Image: 5}\n") == {"Image": [5]}


@pytest.mark.parametrize("bad", ["- Image: [x]", "Image: [1\n", "- just text"])
def test_unreadable_import_output_is_an_import_error(bad):
    with pytest.raises(om.OmeroImportError):
        om.parse_import_output(bad)


# --- provenance and idempotency ------------------------------------------------------


def test_provenance_map():
    prov = om.provenance_map(ROW, instrument="scope-3", agent_version="9.9")
    assert list(prov) == list(om.PROVENANCE_KEYS)
    assert prov["autotx.instrument"] == "scope-3"
    assert prov["autotx.user"] == "alice"
    assert prov["autotx.dataset"] == "alice/run 1"
    assert prov["autotx.agent_version"] == "9.9"
    assert prov["autotx.checksum_algorithm"] == "xxh3_128"
    assert prov["autotx.manifest_digest"] == "ab" * 16
    assert prov["autotx.transfer_started"] == "2026-05-01T09:00:00Z"
    assert prov["autotx.transfer_finished"] == "2026-05-01T09:05:30Z"
    assert prov["autotx.files"] == "3" and prov["autotx.bytes"] == "1234"
    assert all(isinstance(v, str) for v in prov.values())
    from autotx_lib import __version__
    assert om.provenance_map(ROW, instrument="x")["autotx.agent_version"] == __version__


@pytest.mark.parametrize("change, match", [({"manifest_digest": None}, "manifest digest"),
                                           ({"user": ""}, "user and a name")])
def test_provenance_needs_a_verified_dataset(change, match):
    with pytest.raises(om.OmeroSettingsError, match=match):
        om.provenance_map(dict(ROW, **change), instrument="x")


def test_import_decision():
    prov = om.provenance_map(ROW, instrument="scope-3")
    assert om.import_decision([], prov).action == "import"
    complete = dict(prov, **{om.STATE_KEY: om.COMPLETE, om.OBJECTS_KEY: "Image:5,6"})
    decision = om.import_decision([(11, complete)], prov)
    assert (decision.action, decision.annotation_id, decision.objects) == \
        ("skip", 11, {"Image": [5, 6]})
    started = dict(prov, **{om.STATE_KEY: om.STARTED})
    assert om.import_decision([(12, started)], prov).action == "incomplete"
    # a complete import wins over an older half-finished one
    assert om.import_decision([(12, started), (13, complete)], prov).action == "skip"
    other = dict(complete, **{"autotx.manifest_digest": "cd" * 16})
    decision = om.import_decision([(14, other)], prov)
    assert decision.action == "import" and "other content" in decision.reason
    elsewhere = dict(complete, **{"autotx.instrument": "scope-9"})
    assert om.import_decision([(15, elsewhere)], prov).action == "import"
    # an attempt whose importer failed before creating anything does not block a retry,
    # and its annotation is reused
    failed = dict(prov, **{om.STATE_KEY: om.FAILED})
    decision = om.import_decision([(16, failed)], prov)
    assert (decision.action, decision.annotation_id) == ("import", 16)
    assert om.import_decision([(16, failed), (17, started)], prov).action == "incomplete"
    with pytest.raises(om.OmeroSettingsError):
        om.import_decision([], {"autotx.dataset": "a/b"})


def test_objects_round_trip():
    objects = {"Image": [1, 2], "Plate": [3]}
    assert om.parse_objects(om.format_objects(objects)) == objects
    assert om.parse_objects("garbage;Image:x,4") == {"Image": [4]}


# --- bulk import ------------------------------------------------------------------------


def test_bulk_import_yaml_and_tsv(tmp_path):
    yml, tsv = om.bulk_import_yaml(
        [tmp_path / "a.tif", (tmp_path / "plate.fake", "Screen:name:plates"),
         (tmp_path / "run 2", om.ContainerSpec("Project/Dataset", ("alice", "run 2"), 77))],
        tmp_path / "bulk", target="Dataset:name:inbox", transfer="ln_s",
        checksum_algorithm="File-Size-64")
    data = yaml.safe_load(yml.read_text())
    assert data["path"] == tsv.name and data["columns"] == ["target", "path"]
    assert data["continue"] == "true" and data["transfer"] == "ln_s"
    assert data["checksum_algorithm"] == "File-Size-64" and data["skip"] == "upgrade"
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    assert rows == [["Dataset:name:inbox", str(tmp_path / "a.tif")],
                    ["Screen:name:plates", str(tmp_path / "plate.fake")],
                    ["Dataset:id:77", str(tmp_path / "run 2")]]
    assert (tmp_path / "bulk" / "bulk.tsv") == tsv


@pytest.mark.parametrize("kwargs, match", [
    ({"entries": []}, "nothing to write"),
    ({"entries": ["/a/b.tif"], "target": None}, "no target"),
    ({"entries": ["/a/b\tc.tif"]}, "tab"),
    ({"transfer": "move"}, "transfer"),
    ({"name": "../x"}, "bulk file name"),
    ({"entries": [("/a.tif", "alice/run")]}, "ensure_container"),
])
def test_bulk_import_yaml_refuses_bad_input(tmp_path, kwargs, match):
    args = {"entries": ["/a/b.tif"], "target": "Dataset:id:1"}
    args.update(kwargs)
    with pytest.raises(om.OmeroSettingsError, match=match):
        om.bulk_import_yaml(args.pop("entries"), tmp_path, **args)


# --- with omero-py, without a server ------------------------------------------------------

requires_omero_py = pytest.mark.skipif(
    not HAS_OMERO, reason="omero-py is not installed (the optional 'omero' extra): run "
    "`python3 tools/setup_omero.py` to check against omero-py itself")


@requires_omero_py
def test_omero_py_own_parser_accepts_our_import_arguments():
    from omero.cli import CLI

    args = om.import_arguments(["/d/a.tif", "/d/b c.tif"], "Screen:id:3", host="h", port=4065,
                               session_key="key-1", transfer="ln_s", name="n",
                               output_file="/tmp/o.yaml", errs_file="/tmp/e.log")
    cli = CLI()
    cli.loadplugins()
    parsed = cli.parser.parse_args(args)
    assert (parsed.server, parsed.port, parsed.key) == ("h", "4065", "key-1")
    assert (parsed.target, parsed.output, parsed.transfer) == ("Screen:id:3", "yaml", "ln_s")
    assert (parsed.file, parsed.errs) == ("/tmp/o.yaml", "/tmp/e.log")
    assert parsed.path == ["/d/a.tif", "/d/b c.tif"] and parsed.skip == ["upgrade"]


@requires_omero_py
def test_a_port_that_is_not_omero_is_a_clear_connection_error():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(10)
    port = server.getsockname()[1]

    import threading

    def hang_up() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                client.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        with pytest.raises(om.OmeroConnectionError, match=f"127.0.0.1:{port}") as info, \
                om.connect(host="127.0.0.1", port=port, user="u", password="pw-not-shown"):
            pass
    finally:
        server.close()
    assert "pw-not-shown" not in str(info.value) and info.value.retryable


@requires_omero_py
def test_connect_to_a_closed_port_with_omero_py():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(om.OmeroConnectionError, match="refused"), \
            om.connect(host="127.0.0.1", port=port, user="u", password="p"):
        pass


# --- against a real server (OMERO_HOST, OMERO_USER, OMERO_PASSWORD) ------------------------


def test_server_tests_report_why_they_skip():
    reason = _server_skip_reason()
    if reason:
        print(f"OMERO server tests skipped: {reason}")
    assert reason is None or "OMERO" in reason or "omero" in reason


@pytest.fixture
def conn():
    with om.connect() as connection:
        yield connection


@requires_omero_server
def test_wrong_password_is_an_auth_error():
    with pytest.raises(om.OmeroAuthError) as info, \
            om.connect(password="definitely-wrong-" + uuid.uuid4().hex):
        pass
    assert "definitely-wrong" not in str(info.value)


@requires_omero_server
def test_ensure_container_twice_gives_one(conn):
    name = f"autotx-test-{uuid.uuid4().hex[:8]}"
    first = om.ensure_container(conn, "Project/Dataset", name, "ds")
    second = om.ensure_container(conn, "Project/Dataset", name, "ds")
    assert first.id == second.id
    screen = om.ensure_container(conn, "Screen", name)
    assert om.ensure_container(conn, "Screen", name).id == screen.id


def _annotation_values(conn, kind: str, object_id: int) -> dict[str, str]:
    obj = conn.getObject(kind, object_id)
    for annotation in obj.listAnnotations(ns=om.NAMESPACE):
        return dict(annotation.getValue())
    return {}


@requires_omero_server
def test_import_a_sample_file_with_provenance_once(conn, sampledata: Path):
    sample = sampledata / "ome-tiff" / "ome_sample_multi-channel.ome.tif"
    tag = uuid.uuid4().hex[:8]
    prov = om.provenance_map(dict(ROW, name=f"run-{tag}", manifest_digest=tag * 4),
                             instrument="autotx-tests")
    target = om.ensure_container(conn, "Project/Dataset", f"autotx-test-{tag}", "ds")
    started = time.monotonic()
    ids = om.import_files(conn, [sample], target, provenance=prov)
    assert ids, "the import made no image"
    values = _annotation_values(conn, "Image", ids[0])
    assert values["autotx.manifest_digest"] == tag * 4
    assert values[om.STATE_KEY] == om.COMPLETE
    assert om.import_files(conn, [sample], target, provenance=prov) == []
    print(f"imported {len(ids)} image(s) in {time.monotonic() - started:.1f} s")


@requires_omero_server
def test_import_a_fake_plate_into_a_screen(conn, tmp_path):
    plate = tmp_path / "SPW&plates=1&plateRows=2&plateCols=3&fields=1.fake"
    plate.touch()
    tag = uuid.uuid4().hex[:8]
    prov = om.provenance_map(dict(ROW, name=f"plate-{tag}", manifest_digest=tag * 4),
                             instrument="autotx-tests")
    spec = om.target_for({"target": "auto", "screen": "autotx-test-{dataset}"},
                         {"user": "alice", "name": tag}, is_plate=om.looks_like_plate([plate]))
    assert spec.kind == "Screen"
    screen = om.ensure_container(conn, spec.kind, *spec.names)
    ids = om.import_files(conn, [plate], screen, provenance=prov)
    assert len(ids) == 1
    assert _annotation_values(conn, "Plate", ids[0])["autotx.dataset"] == f"alice/plate-{tag}"
    assert om.import_files(conn, [plate], screen, provenance=prov) == []
