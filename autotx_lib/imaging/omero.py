"""OMERO import helpers: connect, find or create containers, import with provenance.

Everything that does not need a server is a pure function here and is tested without
omero-py: connection settings (:func:`resolve_connection`), import targets
(:class:`ContainerSpec`, :func:`parse_target`, :func:`target_for`), the arguments of
``omero import`` (:func:`import_arguments`), the parsing of its ``--output yaml``
(:func:`parse_import_output`), the provenance map (:func:`provenance_map`), the
idempotency decision (:func:`import_decision`), plate detection
(:func:`looks_like_plate`) and bulk-import files (:func:`bulk_import_yaml`).

The functions that talk to a server (:func:`connect`, :func:`ensure_container`,
:func:`import_files`, :func:`find_provenance`) import omero-py inside, through
:func:`autotx_lib._optional.require`; install it with ``python3 tools/setup_omero.py``.

Idempotency
-----------
:func:`import_files` with ``provenance`` first writes one map annotation (namespace
:data:`NAMESPACE`, ``autotx.state = started``) on the target container, then runs the
import, then sets ``autotx.state = complete`` with the new object ids and links the same
annotation to every imported Image or Plate. A later call for the same dataset and
manifest digest finds it: ``complete`` means nothing is imported again; ``started`` means
an earlier attempt stopped half-way, which is reported (:class:`PartialImportError`)
instead of importing a second copy.

Examples
--------
>>> spec = target_for({"target": "project/dataset", "project": "{user}",
...                    "dataset": "{dataset}"}, {"user": "alice", "name": "run1"})
>>> spec.kind, spec.names
('Project/Dataset', ('alice', 'run1'))
>>> with connect() as conn:                                   # doctest: +SKIP
...     ids = import_files(conn, ["/data/a.tif"], spec)       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import socket
import string
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autotx_lib.errors import AutotxError

log = logging.getLogger("autotx.omero")

#: Namespace of our provenance map annotations.
NAMESPACE = "autotx_lib.org/omero/provenance"
DEFAULT_PORT = 4064
TRANSFER_MODES = ("upload", "ln_s")
CONTAINER_KINDS = ("Project/Dataset", "Dataset", "Screen")
#: Keys of the provenance map, in display order.
PROVENANCE_KEYS = (
    "autotx.instrument", "autotx.user", "autotx.dataset", "autotx.agent_version",
    "autotx.checksum_algorithm", "autotx.manifest_digest", "autotx.transfer_started",
    "autotx.transfer_finished", "autotx.files", "autotx.bytes", "autotx.destination",
)
STATE_KEY = "autotx.state"
OBJECTS_KEY = "autotx.objects"
STARTED, COMPLETE, FAILED = "started", "complete", "failed"
_NAME_LIMIT = 255


# --- errors -----------------------------------------------------------------------


class OmeroError(AutotxError):
    """Something went wrong talking to OMERO.

    ``retryable`` tells a job runner whether trying again later may help.
    """

    retryable = True


class OmeroSettingsError(OmeroError, ValueError):
    """An argument or setting is missing or invalid (retrying does not help)."""

    retryable = False


class OmeroConnectionError(OmeroError):
    """The server cannot be reached (wrong host or port, server down, network)."""

    def __init__(self, host: str, port: int, reason: str):
        self.host, self.port, self.reason = host, port, reason
        super().__init__(
            f"cannot reach the OMERO server at {host}:{port}: {reason}. Check the host name and "
            "port (OMERO_HOST / OMERO_PORT or [omero] host/port), that the server runs, and that "
            "this machine may connect to it; the import is retried later."
        )


class OmeroAuthError(OmeroError):
    """The server refused the login (wrong user name or password, or no such group)."""

    retryable = False

    def __init__(self, host: str, user: str, detail: str = ""):
        self.host, self.user = host, user
        super().__init__(
            f"OMERO at {host} refused the login of user {user!r}"
            + (f" ({detail})" if detail else "")
            + ": wrong user name or password, or the user is not in the requested group. "
            "Fix the credentials (OMERO_USER / OMERO_PASSWORD, or [omero] user and "
            "password_env / password_file); the password itself is never shown."
        )


class OmeroImportError(OmeroError):
    """``omero import`` failed (non-zero exit) or printed nothing we could read."""

    def __init__(self, message: str, *, exit_code: int | None = None, log_tail: str = ""):
        self.exit_code = exit_code
        self.log_tail = log_tail
        text = message
        if log_tail:
            text += f"\nlast lines of the importer's log:\n{log_tail}"
        super().__init__(text)


class PartialImportError(OmeroError):
    """An earlier import of this dataset started and never completed.

    Not retried automatically: look at the container, remove what is half there and the
    annotation, or call :func:`import_files` with ``on_partial="import"``.
    """

    retryable = False

    def __init__(self, dataset: str, annotation_id: int | None, container: str):
        self.dataset, self.annotation_id, self.container = dataset, annotation_id, container
        super().__init__(
            f"an earlier import of {dataset} into {container} started and never completed "
            f"(provenance annotation {annotation_id} is still in state 'started'). Nothing was "
            "imported now, to avoid a second copy. Check that container in OMERO: delete the "
            "half-imported images and that annotation, then retry (or import again with "
            "on_partial='import')."
        )


# --- connection settings ------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and as whom to log in. ``repr`` never shows the password."""

    host: str
    port: int = DEFAULT_PORT
    user: str = ""
    password: str = field(default="", repr=False)
    secure: bool = True
    group: str | None = None

    def __repr__(self) -> str:
        return (f"ConnectionSettings(host={self.host!r}, port={self.port}, user={self.user!r}, "
                f"password={'***' if self.password else '(none)'}, secure={self.secure}, "
                f"group={self.group!r})")

    __str__ = __repr__


def _setting(section: Any, name: str) -> Any:
    if section is None:
        return None
    if isinstance(section, Mapping):
        return section.get(name)
    return getattr(section, name, None)


def read_password(section: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """The password named by a config section: ``password_env`` or ``password_file``.

    The section never holds the password itself (see :class:`autotx_lib.config.OmeroSettings`).
    """
    environ = os.environ if environ is None else environ
    env_name = _setting(section, "password_env")
    if env_name and environ.get(env_name):
        return environ[env_name]
    path = _setting(section, "password_file")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip() or None
        except OSError as error:
            raise OmeroSettingsError(
                f"cannot read the OMERO password file {path}: {error.strerror}. Check the "
                "path in [omero] password_file and that the agent's user may read it."
            ) from None
    return None


def resolve_connection(host: str | None = None, port: int | None = None, user: str | None = None,
                       password: str | None = None, secure: bool | None = None,
                       group: str | None = None, *, settings: Any = None,
                       environ: Mapping[str, str] | None = None) -> ConnectionSettings:
    """Connection settings from the arguments, then the environment, then a config section.

    Parameters
    ----------
    host, port, user, password, secure, group
        Explicit values win.
    settings : OmeroSettings, mapping or None
        A config section (``[omero]``) consulted last.
    environ : mapping, optional
        Defaults to ``os.environ``: ``OMERO_HOST``, ``OMERO_PORT``, ``OMERO_USER``,
        ``OMERO_PASSWORD``, ``OMERO_GROUP``, ``OMERO_SECURE`` (``0``/``false`` for no).

    Returns
    -------
    settings : ConnectionSettings

    Raises
    ------
    OmeroSettingsError
        Naming every missing value and where it may come from.

    Examples
    --------
    >>> s = resolve_connection(environ={"OMERO_HOST": "omero.example.org",
    ...                                 "OMERO_USER": "ann", "OMERO_PASSWORD": "pw"})
    >>> s.host, s.port, s.user, "pw" in repr(s)
    ('omero.example.org', 4064, 'ann', False)
    """
    environ = os.environ if environ is None else environ
    host = host or environ.get("OMERO_HOST") or _setting(settings, "host")
    user = user or environ.get("OMERO_USER") or _setting(settings, "user")
    password = password or environ.get("OMERO_PASSWORD") or read_password(settings, environ)
    group = group or environ.get("OMERO_GROUP") or _setting(settings, "group")
    port_value: Any = port or environ.get("OMERO_PORT") or _setting(settings, "port") \
        or DEFAULT_PORT
    if secure is None:
        env_secure = environ.get("OMERO_SECURE")
        if env_secure is not None:
            secure = env_secure.strip().lower() not in ("0", "false", "no", "off")
        else:
            configured = _setting(settings, "secure")
            secure = True if configured is None else bool(configured)
    problems = []
    try:
        port_number = int(port_value)
        if not 0 < port_number < 65536:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"port {port_value!r} is not a port number (1-65535; OMERO uses 4064)")
        port_number = DEFAULT_PORT
    if not host:
        problems.append("no host (give host=, set OMERO_HOST, or [omero] host)")
    if not user:
        problems.append("no user (give user=, set OMERO_USER, or [omero] user)")
    if not password:
        problems.append("no password (give password=, set OMERO_PASSWORD, or [omero] "
                        "password_env / password_file)")
    if problems:
        raise OmeroSettingsError("cannot connect to OMERO: " + "; ".join(problems))
    return ConnectionSettings(str(host), port_number, str(user), str(password), bool(secure),
                              str(group) if group else None)


# --- targets ------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """Where imported objects go: ``Project/Dataset`` (two names), ``Dataset`` or ``Screen``.

    ``id`` (of the Dataset or Screen) is set once the container is known on a server.
    """

    kind: Literal["Project/Dataset", "Dataset", "Screen"]
    names: tuple[str, ...] = ()
    id: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONTAINER_KINDS:
            raise OmeroSettingsError(f"container kind {self.kind!r} is not one of "
                                     f"{', '.join(CONTAINER_KINDS)}")
        expected = 2 if self.kind == "Project/Dataset" else 1
        if self.id is None and len(self.names) != expected:
            raise OmeroSettingsError(
                f"a {self.kind} target needs {expected} name(s) "
                f"({'project and dataset' if expected == 2 else 'its name'}); got {list(self.names)}")
        for name in self.names:
            if not isinstance(name, str) or not name.strip():
                raise OmeroSettingsError(f"{self.kind} names must be non-empty text; got "
                                         f"{list(self.names)}")
            if len(name) > _NAME_LIMIT or any(ch in name for ch in "\n\r\t\0"):
                raise OmeroSettingsError(f"container name {name[:40]!r}... is longer than "
                                         f"{_NAME_LIMIT} characters or holds control characters")
        if self.id is not None and (not isinstance(self.id, int) or self.id <= 0):
            raise OmeroSettingsError(f"container id must be a positive integer; got {self.id!r}")

    @property
    def leaf(self) -> Literal["Dataset", "Screen"]:
        """The OMERO class the import goes into: ``Dataset`` or ``Screen``."""
        return "Screen" if self.kind == "Screen" else "Dataset"

    def with_id(self, object_id: int) -> ContainerSpec:
        """The same spec with the server id of its Dataset or Screen."""
        return ContainerSpec(self.kind, self.names, int(object_id))

    def cli_target(self) -> str:
        """The ``-T`` argument of ``omero import``.

        ``Dataset:id:N`` / ``Screen:id:N`` when the id is known. Otherwise
        ``Dataset:name:X`` / ``Screen:name:X`` (the importer finds or creates a container
        of that name); a Project/Dataset target needs its id (:func:`ensure_container`)
        because ``-T`` cannot name a project.
        """
        if self.id is not None:
            return f"{self.leaf}:id:{self.id}"
        if self.kind == "Project/Dataset":
            raise OmeroSettingsError(
                f"the target {self} needs the dataset's id: call ensure_container(conn, "
                "'Project/Dataset', project, dataset) first (omero import -T cannot name a "
                "project)")
        return f"{self.leaf}:name:{self.names[-1]}"

    def __str__(self) -> str:
        where = "/".join(self.names) if self.names else "?"
        return f"{self.kind} {where}" + (f" (id {self.id})" if self.id is not None else "")


_TARGET = re.compile(r"^(?P<kind>Dataset|Screen):(?:(?P<how>id|name):)?(?P<value>.+)$")


def parse_target(target: ContainerSpec | str | int, *, kind: str = "Dataset") -> ContainerSpec:
    """Normalise a target: a :class:`ContainerSpec`, ``"Dataset:id:5"``, ``"Dataset:5"``,
    ``"Dataset:name:run1"``, ``"Screen:name:plates"``, ``"Project/Dataset"`` path
    ``"alice/run1"``, or a bare id (of a ``kind``).

    Examples
    --------
    >>> parse_target("Dataset:id:12").cli_target()
    'Dataset:id:12'
    >>> parse_target("alice/run 1").names
    ('alice', 'run 1')
    """
    if isinstance(target, ContainerSpec):
        return target
    if isinstance(target, bool):
        raise OmeroSettingsError(f"target {target!r} is not a container")
    if isinstance(target, int):
        return ContainerSpec(kind, (), target)  # type: ignore[arg-type]
    if not isinstance(target, str) or not target.strip():
        raise OmeroSettingsError(f"target {target!r} is empty or not text; give e.g. "
                                 "'Dataset:id:5', 'Dataset:name:run1', 'Screen:name:plates' "
                                 "or 'project/dataset'")
    match = _TARGET.match(target.strip())
    if match:
        value = match["value"]
        if match["how"] == "id" or (match["how"] is None and value.isdigit()):
            if not value.isdigit():
                raise OmeroSettingsError(f"target {target!r}: the id must be a number")
            return ContainerSpec(match["kind"], (), int(value))  # type: ignore[arg-type]
        return ContainerSpec(match["kind"], (value,))  # type: ignore[arg-type]
    if target.count("/") == 1:
        project, dataset = (part.strip() for part in target.split("/"))
        return ContainerSpec("Project/Dataset", (project, dataset))
    raise OmeroSettingsError(f"target {target!r} is not understood; give e.g. 'Dataset:id:5', "
                             "'Dataset:name:run1', 'Screen:name:plates' or 'project/dataset'")


TARGET_RULES = ("auto", "project/dataset", "dataset", "screen")
TEMPLATE_FIELDS = ("user", "dataset", "instrument", "date")


def check_template(template: str) -> str:
    """Raise :class:`OmeroSettingsError` unless ``template`` only uses known fields."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise OmeroSettingsError(f"name template {template!r}: {error}") from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise OmeroSettingsError(f"name template {template!r} uses {unknown}; allowed: "
                                 + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS))
    return template


def target_for(rule: Any, dataset: Mapping[str, Any] | Any, *, is_plate: bool = False) -> ContainerSpec:
    """Apply a target rule (``[omero]`` settings) to a delivered dataset.

    Parameters
    ----------
    rule : OmeroSettings or mapping
        ``target`` (``auto``: Screen for plates, else Project/Dataset; ``project/dataset``;
        ``dataset``; ``screen``) and the name templates ``project``, ``dataset``,
        ``screen`` (fields ``{user}``, ``{dataset}``, ``{instrument}``, ``{date}``).
    dataset : mapping or journal row
        With ``user`` and ``name`` (and optionally ``instrument``, ``finished_at``).
    is_plate : bool
        Whether the dataset is a plate (see :func:`looks_like_plate`).

    Returns
    -------
    spec : ContainerSpec
    """
    kind = (_setting(rule, "target") or "auto").lower()
    if kind not in TARGET_RULES:
        raise OmeroSettingsError(f"target rule {kind!r} is not one of {', '.join(TARGET_RULES)}")
    if kind == "auto":
        kind = "screen" if is_plate else "project/dataset"
    get = (lambda k: dataset.get(k)) if isinstance(dataset, Mapping) else \
        (lambda k: getattr(dataset, k, None))
    finished = get("finished_at") or get("transfer_finished")
    date = finished.strftime("%Y-%m-%d") if isinstance(finished, dt.datetime) else \
        (str(finished)[:10] if finished else dt.date.today().isoformat())
    values = {"user": get("user") or "", "dataset": get("name") or get("dataset") or "",
              "instrument": get("instrument") or "", "date": date}

    def fill(key: str, default: str) -> str:
        template = check_template(_setting(rule, key) or default)
        return template.format(**values).strip()

    if kind == "screen":
        return ContainerSpec("Screen", (fill("screen", "{user}"),))
    if kind == "dataset":
        return ContainerSpec("Dataset", (fill("dataset", "{dataset}"),))
    return ContainerSpec("Project/Dataset", (fill("project", "{user}"), fill("dataset", "{dataset}")))


_PLATE_SUFFIXES = (".htd", ".xdce", ".wpi", ".mlf", ".mrf")


def looks_like_plate(paths: Iterable[str | os.PathLike[str]]) -> bool:
    """Whether a dataset's files look like a screening plate (imported into a Screen).

    A plate: a Bio-Formats ``.fake`` SPW/plate file, a plate description (``.htd``,
    ``.xdce``, ``.wpi``, CellVoyager ``.mlf``/``.mrf``), or mostly files named by a plate
    reader's pattern (Opera, ImageXpress, Cellomics).
    """
    from autotx_lib.imaging.plate import VENDOR_PATTERNS

    patterns = [re.compile(p, re.IGNORECASE) for p in VENDOR_PATTERNS.values()]
    images = matched = 0
    for item in paths:
        name = Path(item).name
        lower = name.lower()
        if lower.endswith(".fake") and ("plates=" in lower or lower.startswith("spw")):
            return True
        if lower.endswith(_PLATE_SUFFIXES):
            return True
        if lower.endswith((".tif", ".tiff", ".c01")):
            images += 1
            matched += any(p.match(name) for p in patterns)
    return images >= 2 and matched >= images / 2


# --- the import command and its output ------------------------------------------------


def import_arguments(paths: Sequence[str | os.PathLike[str]], target: ContainerSpec | str | int,
                     *, host: str, port: int = DEFAULT_PORT, session_key: str,
                     transfer: str = "upload", name: str | None = None,
                     output_file: str | os.PathLike[str] | None = None,
                     errs_file: str | os.PathLike[str] | None = None,
                     continue_on_error: bool = False) -> list[str]:
    """The argument list of ``omero import`` (for ``omero.cli.CLI.invoke``).

    Logs in with an existing session (``-k``), so no password is ever on a command line.

    Raises
    ------
    OmeroSettingsError
        No paths, an unknown transfer mode, an empty session key, a Project/Dataset
        target without an id.

    Examples
    --------
    >>> import_arguments(["/d/a.tif"], "Dataset:id:3", host="h", session_key="k")[:8]
    ['import', '-s', 'h', '-p', '4064', '-k', 'k', '--skip']
    """
    paths = [os.path.abspath(os.fspath(p)) for p in paths]  # never starts with '-'
    if not paths:
        raise OmeroSettingsError("nothing to import: no paths given")
    if transfer not in TRANSFER_MODES:
        raise OmeroSettingsError(f"transfer {transfer!r} is not one of {', '.join(TRANSFER_MODES)} "
                                 "(upload copies the files into OMERO; ln_s imports in place and "
                                 "needs the server to see the same paths)")
    if not session_key:
        raise OmeroSettingsError("no session key: connect first (connect() gives one)")
    if not host:
        raise OmeroSettingsError("no host for omero import")
    spec = parse_target(target)
    args = ["import", "-s", host, "-p", str(int(port)), "-k", session_key,
            "--skip", "upgrade", "-T", spec.cli_target(), "--output", "yaml"]
    if transfer != "upload":
        args += ["--transfer", transfer]
    if name:
        args += ["-n", name]
    if continue_on_error:
        args.append("-c")
    if output_file is not None:
        args += ["--file", os.fspath(output_file)]
    if errs_file is not None:
        args += ["--errs", os.fspath(errs_file)]
    return args + paths


def parse_import_output(text: str) -> dict[str, list[int]]:
    """The new object ids in ``omero import --output yaml``'s output, by class.

    The importer prints one YAML list entry per fileset, e.g.
    ``- {path: /d/a.tif, Image: [51], Fileset: [12]}``; plates add ``Plate``.

    Returns
    -------
    ids : dict
        e.g. ``{"Image": [51, 52], "Fileset": [12]}`` (classes in first-seen order).

    Raises
    ------
    OmeroImportError
        The text is not such YAML (the message quotes its start).

    Examples
    --------
    >>> parse_import_output("---\\n- path: a.fake\\n  Image: [3, 4]\\n  Plate: [1]\\n")
    {'Image': [3, 4], 'Plate': [1]}
    """
    import yaml

    try:
        documents = [d for d in yaml.safe_load_all(text or "") if d is not None]
    except yaml.YAMLError as error:
        raise OmeroImportError(f"cannot read the importer's YAML output ({error}); it began: "
                               f"{(text or '')[:200]!r}") from None
    ids: dict[str, list[int]] = {}
    for document in documents:
        entries = document if isinstance(document, list) else [document]
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise OmeroImportError(f"unexpected entry {entry!r} in the importer's YAML "
                                       f"output; it began: {(text or '')[:200]!r}")
            for key, value in entry.items():
                if key == "path" or not isinstance(key, str) or not key[:1].isupper():
                    continue
                values = value if isinstance(value, list) else [value]
                for v in values:
                    try:
                        ids.setdefault(key, []).append(int(v))
                    except (TypeError, ValueError):
                        raise OmeroImportError(f"{key} id {v!r} in the importer's output is not "
                                               "a number") from None
    return ids


# --- provenance and idempotency ------------------------------------------------------


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.replace(microsecond=0).isoformat() + ("Z" if value.tzinfo is None else "")
    return "" if value is None else str(value)


def provenance_map(dataset: Mapping[str, Any] | Any, *, instrument: str,
                   agent_version: str | None = None) -> dict[str, str]:
    """The key-value provenance attached to imported objects.

    Parameters
    ----------
    dataset : mapping or journal row
        A delivered dataset: ``user``, ``name``, ``algorithm``, ``manifest_digest``,
        ``started_at``, ``finished_at``, ``total_files``, ``total_bytes``, ``dest_path``.
    instrument : str
        The instrument's host alias (``Config.host_alias``).
    agent_version : str, optional
        Defaults to ``autotx_lib.__version__``.

    Returns
    -------
    provenance : dict of str to str
        Keys of :data:`PROVENANCE_KEYS`, in that order; all values are text.
    """
    if agent_version is None:
        from autotx_lib import __version__ as agent_version
    get = (lambda k: dataset.get(k)) if isinstance(dataset, Mapping) else \
        (lambda k: getattr(dataset, k, None))
    user, name = get("user"), get("name")
    if not user or not name:
        raise OmeroSettingsError(f"a dataset needs a user and a name for its provenance; got "
                                 f"user={user!r}, name={name!r}")
    if not get("manifest_digest"):
        raise OmeroSettingsError(f"dataset {user}/{name} has no manifest digest: only verified, "
                                 "delivered datasets are imported")
    values = [instrument, user, f"{user}/{name}", agent_version, get("algorithm"),
              get("manifest_digest"), _iso(get("started_at")), _iso(get("finished_at")),
              get("total_files"), get("total_bytes"), get("dest_path")]
    return {k: "" if v is None else str(v) for k, v in zip(PROVENANCE_KEYS, values, strict=True)}


@dataclass(frozen=True)
class ImportDecision:
    """What to do about a dataset: ``import``, ``skip`` (already complete) or
    ``incomplete`` (an earlier attempt never finished)."""

    action: Literal["import", "skip", "incomplete"]
    reason: str
    annotation_id: int | None = None
    objects: dict[str, list[int]] = field(default_factory=dict)


def _identity(values: Mapping[str, str]) -> tuple[str, str, str]:
    return (values.get("autotx.instrument", ""), values.get("autotx.dataset", ""),
            values.get("autotx.manifest_digest", ""))


def parse_objects(text: str) -> dict[str, list[int]]:
    """``"Image:1,2;Plate:3"`` -> ``{"Image": [1, 2], "Plate": [3]}`` (ignores garbage)."""
    result: dict[str, list[int]] = {}
    for part in (text or "").split(";"):
        kind, _, ids = part.partition(":")
        numbers = [int(i) for i in ids.split(",") if i.strip().isdigit()]
        if kind.strip() and numbers:
            result[kind.strip()] = numbers
    return result


def format_objects(objects: Mapping[str, Sequence[int]]) -> str:
    """``{"Image": [1, 2]}`` -> ``"Image:1,2"``."""
    return ";".join(f"{k}:{','.join(str(i) for i in v)}" for k, v in objects.items() if v)


def import_decision(found: Iterable[tuple[int | None, Mapping[str, str]]],
                    provenance: Mapping[str, str]) -> ImportDecision:
    """Decide whether to import, from the provenance annotations already on the server.

    Parameters
    ----------
    found : iterable of (annotation id, values)
        Our map annotations (namespace :data:`NAMESPACE`) that may concern this dataset.
    provenance : mapping
        This dataset's :func:`provenance_map`.

    Returns
    -------
    decision : ImportDecision
        ``skip`` when an annotation of the same instrument, dataset and manifest digest is
        ``complete``; ``incomplete`` when one is only ``started``; else ``import`` (also
        when the same dataset arrived again with other content: a new digest). An
        annotation left ``failed`` by an attempt that created nothing is reused
        (``annotation_id``) by the next import.
    """
    me = _identity(provenance)
    if not all(me[1:]):
        raise OmeroSettingsError("the provenance lacks the dataset or its manifest digest")
    started: int | None = None
    failed: int | None = None
    other_digest = False
    for annotation_id, values in found:
        ident = _identity(values)
        if ident[:2] == me[:2] and ident[2] != me[2]:
            other_digest = True
        if ident != me:
            continue
        state = values.get(STATE_KEY, "")
        if state == COMPLETE:
            objects = parse_objects(values.get(OBJECTS_KEY, ""))
            return ImportDecision("skip", f"{me[1]} (manifest {me[2][:12]}...) was already "
                                  f"imported: {format_objects(objects) or 'no objects'}",
                                  annotation_id, objects)
        if state == FAILED:
            failed = annotation_id if failed is None else failed
        else:
            started = annotation_id if started is None else started
    if started is not None:
        return ImportDecision("incomplete", f"an earlier import of {me[1]} started and never "
                              "completed", started)
    reason = f"{me[1]} is not in OMERO yet"
    if other_digest:
        reason = f"{me[1]} was imported before with other content (another manifest digest)"
    if failed is not None:
        reason = f"an earlier import of {me[1]} failed before creating anything; importing again"
    return ImportDecision("import", reason, failed)


# --- bulk import files ---------------------------------------------------------------


def bulk_import_yaml(entries: Iterable[tuple[str | os.PathLike[str], ContainerSpec | str | int]
                                       | str | os.PathLike[str]],
                     folder: str | os.PathLike[str], *, target: ContainerSpec | str | int | None = None,
                     transfer: str = "upload", continue_on_error: bool = True,
                     name: str = "bulk", checksum_algorithm: str | None = None
                     ) -> tuple[Path, Path]:
    """Write an OMERO bulk-import description (``<name>.yml`` + ``<name>.tsv``).

    For admins who run ``omero import --bulk <name>.yml`` themselves.

    Parameters
    ----------
    entries : iterable
        Paths (files or dataset folders), each optionally paired with its own target:
        ``(path, "Dataset:name:run1")``. Unpaired paths use ``target``.
    folder : path-like
        Where to write the two files (created if needed).
    target : optional
        The default target (see :func:`parse_target`). Project/Dataset targets need the
        dataset's id (``-T`` cannot name a project).
    transfer, continue_on_error, checksum_algorithm
        Written as bulk options (``transfer``, ``continue``, ``checksum_algorithm``).

    Returns
    -------
    yml, tsv : Path
    """
    if transfer not in TRANSFER_MODES:
        raise OmeroSettingsError(f"transfer {transfer!r} is not one of {', '.join(TRANSFER_MODES)}")
    if not re.fullmatch(r"[\w.-]+", name):
        raise OmeroSettingsError(f"bulk file name {name!r} must be letters, digits, '.', '_', '-'")
    rows = []
    for entry in entries:
        if isinstance(entry, tuple):
            path, own = entry
        else:
            path, own = entry, target
        if own is None:
            raise OmeroSettingsError(f"no target for {os.fspath(path)}: pair it with one or give "
                                     "target=")
        text = os.fspath(path)
        if not text or any(ch in text for ch in "\t\n\r"):
            raise OmeroSettingsError(f"path {text!r} is empty or holds a tab or line break, "
                                     "which the TSV cannot carry")
        rows.append((parse_target(own).cli_target(), text))
    if not rows:
        raise OmeroSettingsError("nothing to write: no paths given")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tsv, yml = out / f"{name}.tsv", out / f"{name}.yml"
    tsv.write_text("".join(f"{t}\t{p}\n" for t, p in rows), encoding="utf-8")
    lines = ["---", "# written by autotx_lib; run: omero import --bulk " + yml.name,
             f"path: \"{tsv.name}\"", "columns:", "  - target", "  - path",
             f"continue: \"{'true' if continue_on_error else 'false'}\""]
    if transfer != "upload":
        lines.append(f"transfer: \"{transfer}\"")
    if checksum_algorithm:
        lines.append(f"checksum_algorithm: \"{checksum_algorithm}\"")
    lines.append("skip: \"upgrade\"")
    yml.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return yml, tsv


# --- talking to a server (omero-py) --------------------------------------------------


def _require_gateway():
    from autotx_lib._optional import require

    return require("omero.gateway", "to talk to an OMERO server")


def _probe(host: str, port: int, timeout: float = 10.0) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise OmeroConnectionError(host, port, error.strerror or str(error)) from None


@contextlib.contextmanager
def connect(host: str | None = None, port: int | None = None, user: str | None = None,
            password: str | None = None, secure: bool | None = None, group: str | None = None,
            *, settings: Any = None, timeout: float = 10.0) -> Iterator[Any]:
    """Log in to OMERO; a context manager yielding a ``BlitzGateway`` (closed on exit).

    Values come from the arguments, then the environment (``OMERO_HOST``, ``OMERO_PORT``,
    ``OMERO_USER``, ``OMERO_PASSWORD``, ``OMERO_GROUP``, ``OMERO_SECURE``), then
    ``settings`` (the ``[omero]`` config section). The password is never logged.

    Raises
    ------
    MissingDependencyError
        omero-py is not installed (``python3 tools/setup_omero.py``).
    OmeroSettingsError
        A value is missing.
    OmeroConnectionError
        The host or port cannot be reached.
    OmeroAuthError
        The server refused the user name or password.

    Examples
    --------
    >>> with connect(host="omero.example.org", user="ann",
    ...              password="...") as conn:          # doctest: +SKIP
    ...     print(conn.getUser().getName())
    """
    gateway = _require_gateway()
    s = resolve_connection(host, port, user, password, secure, group, settings=settings)
    _probe(s.host, s.port, timeout)
    log.info("connecting to OMERO at %s:%s as %s", s.host, s.port, s.user)
    conn = gateway.BlitzGateway(s.user, s.password, host=s.host, port=s.port, secure=s.secure,
                                group=s.group)
    try:
        ok = conn.connect()
    except Exception as error:  # Ice errors: the server went away during the login
        with contextlib.suppress(Exception):
            conn.close()
        raise OmeroConnectionError(s.host, s.port, f"{type(error).__name__}: {error}") from None
    if not ok:
        last = getattr(conn, "getLastError", lambda: None)()
        with contextlib.suppress(Exception):
            conn.close()
        import Ice

        if isinstance(last, Ice.LocalException):  # transport or protocol: not an OMERO login
            raise OmeroConnectionError(s.host, s.port, f"{type(last).__name__} (is this an "
                                       "OMERO server's Ice port, and secure set right?)")
        detail = type(last).__name__ if last is not None else ""
        raise OmeroAuthError(s.host, s.user, detail)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _find_by_name(conn: Any, kind: str, name: str, parent: Any = None) -> Any:
    if parent is not None:
        candidates = [c for c in parent.listChildren() if c.getName() == name]
    else:
        candidates = list(conn.getObjects(kind, attributes={"name": name},
                                          opts={"owner": conn.getUserId()}))
    candidates.sort(key=lambda c: c.getId())
    return candidates[0] if candidates else None


def ensure_container(conn: Any, kind: str, *names: str) -> ContainerSpec:
    """Find or create a container; the same call twice gives the same one (no duplicates).

    Parameters
    ----------
    conn : BlitzGateway
    kind : {"Project/Dataset", "Dataset", "Screen"}
    *names : str
        Project and dataset names, or the Dataset's or Screen's name.

    Returns
    -------
    spec : ContainerSpec
        With the id of the Dataset or Screen.

    Examples
    --------
    >>> ensure_container(conn, "Project/Dataset", "alice", "run1").id    # doctest: +SKIP
    """
    spec = ContainerSpec(kind, tuple(names))  # type: ignore[arg-type]
    _require_gateway()
    import omero.model
    from omero.rtypes import rstring

    update = conn.getUpdateService()

    def create(cls: Any, name: str) -> int:
        obj = cls()
        obj.setName(rstring(name))
        return update.saveAndReturnObject(obj, conn.SERVICE_OPTS).getId().getValue()

    if kind == "Screen":
        found = _find_by_name(conn, "Screen", names[0])
        return spec.with_id(found.getId() if found else create(omero.model.ScreenI, names[0]))
    if kind == "Dataset":
        found = _find_by_name(conn, "Dataset", names[0])
        return spec.with_id(found.getId() if found else create(omero.model.DatasetI, names[0]))
    project = _find_by_name(conn, "Project", names[0])
    if project is None:
        project = conn.getObject("Project", create(omero.model.ProjectI, names[0]))
    dataset = _find_by_name(conn, "Dataset", names[1], parent=project)
    if dataset is not None:
        return spec.with_id(dataset.getId())
    dataset_id = create(omero.model.DatasetI, names[1])
    link = omero.model.ProjectDatasetLinkI()
    link.setParent(omero.model.ProjectI(project.getId(), False))
    link.setChild(omero.model.DatasetI(dataset_id, False))
    update.saveObject(link, conn.SERVICE_OPTS)
    return spec.with_id(dataset_id)


def find_provenance(conn: Any, provenance: Mapping[str, str]) -> list[tuple[int, dict[str, str]]]:
    """Our provenance annotations on the server for this dataset (any digest)."""
    _require_gateway()
    found = []
    for annotation in conn.getObjects("MapAnnotation", attributes={"ns": NAMESPACE}):
        values = {k: v for k, v in (annotation.getValue() or [])}
        if values.get("autotx.dataset") == provenance.get("autotx.dataset"):
            found.append((annotation.getId(), values))
    return found


def _save_map(conn: Any, values: Mapping[str, str], annotation_id: int | None = None) -> Any:
    gateway = _require_gateway()
    if annotation_id is not None:
        annotation = conn.getObject("MapAnnotation", annotation_id)
    else:
        annotation = gateway.MapAnnotationWrapper(conn)
        annotation.setNs(NAMESPACE)
    annotation.setValue([[k, str(v)] for k, v in values.items()])
    annotation.save()
    return annotation


def _link(conn: Any, kind: str, object_id: int, annotation: Any) -> None:
    obj = conn.getObject(kind, object_id)
    if obj is not None:
        obj.linkAnnotation(annotation)


def _run_cli(args: list[str]) -> None:
    """Run ``omero <args>`` in this process; raise OmeroImportError on a non-zero exit."""
    _require_gateway()
    from omero.cli import CLI, NonZeroReturnCode

    cli = CLI()
    cli.loadplugins()
    try:
        cli.invoke(args, strict=True)
    except NonZeroReturnCode as error:
        raise OmeroImportError(f"omero import exited with status {error.rv}",
                               exit_code=error.rv) from None


def _mark_failed(conn: Any, values: dict[str, str], annotation: Any, out_file: Path) -> None:
    """After a failed import: ``failed`` if it created nothing (a retry may import), else
    leave ``started`` with what it made (a retry reports the partial import)."""
    try:
        made = parse_import_output(out_file.read_text()) if out_file.exists() else {}
    except OmeroImportError:
        made = {}
    made = {k: v for k, v in made.items() if k in ("Image", "Plate") and v}
    if made:
        values[OBJECTS_KEY] = format_objects(made)
    else:
        values[STATE_KEY] = FAILED
    with contextlib.suppress(Exception):  # the import's own error is the one to report
        _save_map(conn, values, annotation.getId())


def import_files(conn: Any, paths: Sequence[str | os.PathLike[str]],
                 target: ContainerSpec | str | int, *, transfer: str = "upload",
                 annotations: Mapping[str, str] | None = None, name: str | None = None,
                 provenance: Mapping[str, str] | None = None,
                 on_partial: Literal["raise", "import"] = "raise") -> list[int]:
    """Import files into OMERO with ``omero import`` on the session of ``conn``.

    Parameters
    ----------
    conn : BlitzGateway
        From :func:`connect`.
    paths : sequence of path-like
        Files or folders (a folder imports everything Bio-Formats recognises in it).
    target : ContainerSpec, str or int
        Where to: see :func:`parse_target`. A Project/Dataset target without an id is
        created first (:func:`ensure_container`); plates go into a Screen target.
    transfer : {"upload", "ln_s"}
        ``ln_s`` imports in place (the server must see the same paths).
    annotations : mapping, optional
        More key-value pairs, added to the provenance map.
    name : str, optional
        The imported image's name (``-n``).
    provenance : mapping, optional
        :func:`provenance_map` of the dataset; makes the call idempotent (see the module
        docstring). Without it, nothing is checked and only ``annotations`` are attached.
    on_partial : {"raise", "import"}
        What to do when an earlier attempt never completed.

    Returns
    -------
    ids : list of int
        The new Image ids, or the new Plate ids when the import made plates; empty when
        the dataset had already been imported.

    Raises
    ------
    OmeroImportError
        The importer failed (retryable).
    PartialImportError
        An earlier attempt never completed (with ``on_partial="raise"``).
    """
    spec = parse_target(target)
    if spec.id is None and spec.kind == "Project/Dataset":
        spec = ensure_container(conn, spec.kind, *spec.names)
    values = dict(provenance or {})
    values.update({str(k): str(v) for k, v in (annotations or {}).items()})
    annotation = None
    if provenance:
        decision = import_decision(find_provenance(conn, values), values)
        if decision.action == "skip":
            log.info("%s", decision.reason)
            return []
        if decision.action == "incomplete" and on_partial != "import":
            raise PartialImportError(values.get("autotx.dataset", "?"),
                                     decision.annotation_id, str(spec))
        values[STATE_KEY] = STARTED  # reuses the annotation of a failed or partial attempt
        annotation = _save_map(conn, values, decision.annotation_id)
        if spec.id is not None:
            _link(conn, spec.leaf, spec.id, annotation)
    session_key = conn.getEventContext().sessionUuid
    with tempfile.TemporaryDirectory(prefix="autotx-omero-") as tmp:
        out_file, errs_file = Path(tmp) / "out.yaml", Path(tmp) / "errs.log"
        args = import_arguments(paths, spec, host=conn.host, port=conn.port,
                                session_key=session_key, transfer=transfer, name=name,
                                output_file=out_file, errs_file=errs_file)
        try:
            _run_cli(args)
        except OmeroImportError as error:
            tail = errs_file.read_text(errors="replace")[-2000:] if errs_file.exists() else ""
            if annotation is not None:
                _mark_failed(conn, values, annotation, out_file)
            raise OmeroImportError(str(error), exit_code=error.exit_code,
                                   log_tail=tail) from None
        objects = parse_import_output(out_file.read_text() if out_file.exists() else "")
    new = objects.get("Plate") or objects.get("Image") or []
    if not new:
        raise OmeroImportError(f"omero import of {len(paths)} path(s) reported no new image or "
                               "plate (are the files in a format Bio-Formats reads?)")
    if annotation is None and values:
        annotation = _save_map(conn, values)
    if annotation is not None:
        for kind in ("Plate", "Image") if objects.get("Plate") else ("Image",):
            for object_id in objects.get(kind, []):
                _link(conn, kind, object_id, annotation)
        if provenance:
            values[STATE_KEY] = COMPLETE
            values[OBJECTS_KEY] = format_objects({k: v for k, v in objects.items()
                                                  if k in ("Image", "Plate")})
            _save_map(conn, values, annotation.getId())
    return new


__all__ = [
    "NAMESPACE", "DEFAULT_PORT", "TRANSFER_MODES", "PROVENANCE_KEYS",
    "OmeroError", "OmeroSettingsError", "OmeroConnectionError", "OmeroAuthError",
    "OmeroImportError", "PartialImportError",
    "ConnectionSettings", "resolve_connection", "read_password",
    "ContainerSpec", "parse_target", "target_for", "check_template", "looks_like_plate",
    "import_arguments", "parse_import_output", "provenance_map", "ImportDecision",
    "import_decision", "parse_objects", "format_objects", "bulk_import_yaml",
    "connect", "ensure_container", "find_provenance", "import_files",
]
