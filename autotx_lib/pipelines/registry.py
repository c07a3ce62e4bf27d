"""Workflows: named, versioned Python callables, found by name.

A workflow is a function ``run(context: RunContext) -> dict`` (the run's result items)
with a name and a version. They come from three places, later ones overriding earlier
ones of the same name:

1. the built-ins: ``plate-qc``, ``previews``, ``omero-import``;
2. installed packages, through the ``autotx_lib.workflows`` entry point group
   (``my-analysis = "facility.analysis:workflow"``, naming a :class:`Workflow` or a
   function);
3. the configuration: ``[pipelines] workflows = {my-analysis = "facility.analysis:run"}``.

A function becomes a :class:`Workflow` with :func:`workflow`::

    @workflow("cell-count", version="2")
    def cell_count(context):
        with context.step("count"):
            ...
        return {"cells": 1234}
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from autotx_lib.errors import AutotxError

log = logging.getLogger("autotx.pipelines")

ENTRY_POINT_GROUP = "autotx_lib.workflows"

BUILT_IN = {
    "plate-qc": "autotx_lib.pipelines.workflows.plate_qc:PLATE_QC",
    "previews": "autotx_lib.pipelines.workflows.previews:PREVIEWS",
    "omero-import": "autotx_lib.pipelines.workflows.omero_import:OMERO_IMPORT",
}


class WorkflowNotFoundError(AutotxError):
    """No workflow of that name is installed (or its module does not import)."""

    retryable = False


@dataclass(frozen=True)
class Workflow:
    """A named, versioned callable run on a dataset.

    Parameters
    ----------
    name : str
        What rules and commands call it (``plate-qc``).
    version : str
        Recorded with each run; change it when the results would change.
    function : callable
        ``function(context) -> dict | None``; must be importable (a module-level name)
        where the dask workers run.
    description : str
        One line for ``autotx pipelines list``.
    """

    name: str
    version: str
    function: Callable[..., Any]
    description: str = ""

    def __call__(self, context: Any) -> Any:
        return self.function(context)

    def __reduce__(self) -> tuple[Any, ...]:
        # ``@workflow`` puts this object where the function was, so pickle (which finds
        # functions by module and name) must find the workflow the same way: by reference,
        # the module imported on the worker.
        module, name = getattr(self.function, "__module__", None), \
            getattr(self.function, "__name__", None)
        found = getattr(sys.modules.get(module or ""), name or "", None)
        if found is self and module != "__main__":  # __main__: cloudpickle by value
            return (_attribute, (module, name))
        return (Workflow, (self.name, self.version, self.function, self.description))


def _attribute(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def workflow(name: str, version: str = "1", description: str = ""
             ) -> Callable[[Callable[..., Any]], Workflow]:
    """Decorator: make a function a :class:`Workflow`.

    Examples
    --------
    >>> @workflow("hello", version="1")
    ... def hello(context):
    ...     return {"greeting": "hi"}
    >>> hello.name, hello.version
    ('hello', '1')
    """

    def wrap(function: Callable[..., Any]) -> Workflow:
        return Workflow(name, version, function, description or (function.__doc__ or "")
                        .strip().split("\n")[0])

    return wrap


def load_dotted(reference: str, name: str | None = None) -> Workflow:
    """Import ``"package.module:attribute"`` as a :class:`Workflow` (a function is wrapped)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise WorkflowNotFoundError(f"workflow {name or reference!r}: {reference!r} is not "
                                    '"package.module:function"; fix it in [pipelines] workflows')
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise WorkflowNotFoundError(
            f"workflow {name or reference!r} ({reference}) cannot be loaded: {error}. Install "
            "the package that provides it on this machine and on the dask workers") from None
    if isinstance(target, Workflow):
        return target if name is None or target.name == name else Workflow(
            name, target.version, target.function, target.description)
    if callable(target):
        version = str(getattr(target, "version", getattr(
            importlib.import_module(module_name), "__version__", "1")))
        return Workflow(name or attribute, version, target,
                        (target.__doc__ or "").strip().split("\n")[0])
    raise WorkflowNotFoundError(f"workflow {name or reference!r}: {reference} is not callable")


class Registry:
    """The workflows known here: built-ins, entry points, the configuration's, and extras.

    Parameters
    ----------
    configured : mapping of name to dotted path, optional
        ``[pipelines] workflows``.
    extra : mapping of name to Workflow, optional
        Workflows given directly (tests, notebooks).
    """

    def __init__(self, configured: Mapping[str, str] | None = None,
                 extra: Mapping[str, Workflow] | None = None):
        self.references: dict[str, str] = dict(BUILT_IN)
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            self.references[entry.name] = entry.value
        self.references.update(configured or {})
        self.extra = dict(extra or {})
        self._loaded: dict[str, Workflow] = {}

    def names(self) -> list[str]:
        """Every workflow name known (loaded or not), sorted."""
        return sorted(set(self.references) | set(self.extra))

    def add(self, item: Workflow) -> Workflow:
        """Register a workflow object (overrides one of the same name)."""
        self.extra[item.name] = item
        return item

    def get(self, name: str) -> Workflow:
        """The workflow called ``name``.

        Raises
        ------
        WorkflowNotFoundError
            Unknown name, or its module does not import (e.g. missing after an upgrade).
        """
        if name in self.extra:
            return self.extra[name]
        if name not in self._loaded:
            reference = self.references.get(name)
            if reference is None:
                raise WorkflowNotFoundError(
                    f"no workflow called {name!r} is installed (known: "
                    f"{', '.join(self.names())}); install it or add it to "
                    "[pipelines] workflows")
            self._loaded[name] = load_dotted(reference, name)
        return self._loaded[name]


def registry_for(config: Any = None, extra: Mapping[str, Workflow] | None = None) -> Registry:
    """The registry a configuration describes (``[pipelines] workflows``)."""
    configured = config.pipelines.workflows if config is not None else None
    return Registry(configured, extra)


__all__ = ["Workflow", "workflow", "Registry", "registry_for", "load_dotted",
           "WorkflowNotFoundError", "ENTRY_POINT_GROUP", "BUILT_IN"]
