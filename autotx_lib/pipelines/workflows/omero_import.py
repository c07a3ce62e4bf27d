"""``omero-import``: import the delivered dataset into OMERO, on the pipeline engine.

The same planning and import step as the journal job of
:mod:`autotx_lib.pipelines.omero_import` (target by the ``[omero]`` rule, provenance,
idempotent import), so the behaviour is unchanged; the ``[omero]`` settings come from the
configuration file named by ``params["config"]`` or ``AUTOTX_CONFIG`` on the worker, and the
provenance from the journal's dataset row when the run has one. An unreachable server is a
retryable error (the engine retries with backoff).
"""

from __future__ import annotations

import os
from typing import Any

from autotx_lib.pipelines.context import RunContext
from autotx_lib.pipelines.registry import workflow


def run_omero_import(context: RunContext) -> dict[str, Any]:
    """Import the dataset into OMERO (plates into a Screen), skipping what is there."""
    from autotx_lib.config import load_config
    from autotx_lib.journal import Journal
    from autotx_lib.pipelines.jobs import Job
    from autotx_lib.pipelines.omero_import import omero_import_step, omero_payload, plan_import

    source = context.params.get("config") or os.environ.get("AUTOTX_CONFIG")
    if not source:
        raise ValueError("omero-import needs the agent's configuration: give params "
                         '{config = "/path/autotx.toml"} or set AUTOTX_CONFIG on the workers')
    config = load_config(source)
    with context.step("plan"):
        if context.dataset_id is None:
            raise ValueError("omero-import runs on delivered datasets only (it needs the "
                             "manifest digest the journal holds)")
        row = Journal(config.journal_url).dataset(context.dataset_id)
        job = Job(context.run_id, "omero-import", context.dataset_id,
                  omero_payload(config, row), context.attempt)
        request = plan_import(job, config.omero)
    with context.step("import") as step:
        result = omero_import_step(request)
        step["message"] = f"{len(result.get('ids') or [])} objects into {result.get('target')}"
    return result


OMERO_IMPORT = workflow("omero-import", version="1")(run_omero_import)
