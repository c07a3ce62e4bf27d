"""Workflows the engine tests run: each behaves (or misbehaves) one way."""

from __future__ import annotations

import threading

from autotx_lib.pipelines.registry import workflow

#: Released by the tests when a hanging workflow may end (so no thread outlives its test).
RELEASE = threading.Event()


@workflow("count-files", version="3")
def count_files(context):
    """Count the files of the dataset, in two steps."""
    with context.step("list") as step:
        names = sorted(p.name for p in context.path.rglob("*") if p.is_file())
        step["message"] = f"{len(names)} files"
    with context.step("write"):
        (context.results / "names.txt").write_text("\n".join(names))
    return {"files": len(names), "names": names, "ratio": 0.5, "ok": True, "label": "done"}


@workflow("raises")
def raises(context):
    with context.step("compute"):
        raise ValueError("the threshold must be positive")


@workflow("flaky")
def flaky(context):
    """Fails with a passing error until attempt ``succeed_at``."""
    with context.step("reach the share"):
        if context.attempt < context.params.get("succeed_at", 99):
            raise ConnectionError(f"share unreachable (attempt {context.attempt})")
    return {"attempt": context.attempt}


@workflow("hangs")
def hangs(context):
    RELEASE.wait(30)
    return {}


@workflow("unserialisable")
def unserialisable(context):
    return {"handle": threading.Lock()}


@workflow("fan-out")
def fan_out(context):
    squares = context.map(_square, list(range(20)))
    return {"total": sum(squares)}


def _square(value: int) -> int:
    return value * value


SAMPLE = {w.name: w for w in (count_files, raises, flaky, hangs, unserialisable, fan_out)}
