"""A workflow that keeps memory until its worker is killed (importable by worker processes)."""

from __future__ import annotations

import numpy as np

from autotx_lib.pipelines.registry import workflow


@workflow("leaks")
def leaks(context):
    """Hold ``megabytes`` (default: far more than the worker may use), 20 MB at a time."""
    held = []
    for _ in range(int(context.params.get("megabytes", 4000)) // 20):
        held.append(np.ones(20 * 2**20 // 8))  # touched pages: real resident memory
    return {"held_mb": len(held) * 20}


LEAKS = leaks
