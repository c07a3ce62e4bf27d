"""``omero-import``: import the delivered dataset into OMERO, on the pipeline engine.

The planning and import step of :mod:`autotx_lib.pipelines.omero_import` (target by the
``[omero]`` rule, provenance fixed at delivery, idempotent import). The ``[omero]``
settings are the engine's (``context.sections["omero"]``); without them (a workflow run
by hand on an engine without the section) the configuration file named by
``params["config"]`` or ``AUTOTX_CONFIG``. The payload is the one recorded at delivery
(``params["payload"]``), else built from the journal's dataset row.

Errors: a permanent one (no manifest digest, a bad target rule, missing omero-py, wrong
credentials) fails the run; anything else, an unreachable server included, is retried
with the ``[omero]`` backoff, as the job runner did.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from autotx_lib.pipelines.context import RunContext
from autotx_lib.pipelines.registry import Workflow, workflow

VERSION = "1"


def _settings_and_payload(context: RunContext) -> tuple[Any, dict[str, Any]]:
    from autotx_lib.config import OmeroSettings, load_config

    section = context.sections.get("omero")
    journal_url = context.sections.get("journal_url")
    if section is not None and section.get("enabled"):
        settings = OmeroSettings.model_validate(section)
    else:
        source = context.params.get("config") or os.environ.get("AUTOTX_CONFIG")
        if not source:
            raise ValueError("omero-import needs the agent's configuration: enable [omero] "
                             'where the engine runs, give params {config = "/path/autotx.toml"}'
                             " or set AUTOTX_CONFIG on the workers")
        config = load_config(source)
        settings, journal_url = config.omero, config.journal_url
    payload = context.params.get("payload")
    if payload is None:  # a run recorded by hand or by a rule: the journal has the dataset
        from autotx_lib.journal import Journal
        from autotx_lib.pipelines.omero_import import dataset_payload

        if context.dataset_id is None or journal_url is None:
            raise ValueError("omero-import runs on delivered datasets only (it needs the "
                             "manifest digest the journal holds): autotx pipelines run "
                             "omero-import --all-delivered")
        row = Journal(journal_url).dataset(context.dataset_id)
        payload = dataset_payload(row, context.sections.get("instrument"))
    return settings, payload


def import_into_omero(context: RunContext, import_step: Callable[..., dict[str, Any]] | None
                      = None) -> dict[str, Any]:
    """Plan the import of the run's dataset, then run ``import_step`` (default: the real one).

    Result items: ``target``, ``target_id``, ``kind``, ``ids`` (the OMERO ids imported),
    ``already_imported``.
    """
    from autotx_lib.pipelines.omero_import import omero_import_step, plan_import

    step_function = import_step or omero_import_step
    with context.step("plan"):
        settings, payload = _settings_and_payload(context)
        request = plan_import(payload, settings, context.run_id)
    with context.step("import") as step:
        try:
            result = step_function(request)
        except Exception as error:
            if not isinstance(error, ImportError) and getattr(error, "retryable", None) is None:
                # the job runner retried every unclassified failure; keep doing so
                error.retryable = True  # type: ignore[attr-defined]
            raise
        step["message"] = f"{len(result.get('ids') or [])} objects into {result.get('target')}"
    return result


def run_omero_import(context: RunContext) -> dict[str, Any]:
    """Import the dataset into OMERO (plates into a Screen), skipping what is there."""
    return import_into_omero(context)


def omero_import_workflow(import_step: Callable[..., dict[str, Any]]) -> Workflow:
    """The ``omero-import`` workflow with another import step (tests, a facility's own).

    ``import_step(request: ImportRequest) -> dict`` must pickle (a module-level function or
    an instance of a module-level class) when the workers are other processes.

    Examples
    --------
    >>> item = omero_import_workflow(lambda request: {"ids": [1]})
    >>> item.name, item.version
    ('omero-import', '1')
    """
    return Workflow("omero-import", VERSION, functools.partial(import_into_omero,
                                                              import_step=import_step),
                    "Import the dataset into OMERO (another import step)")


OMERO_IMPORT = workflow("omero-import", version=VERSION)(run_omero_import)
