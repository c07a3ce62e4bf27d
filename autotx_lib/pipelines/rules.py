"""Rules: which workflows run on which delivered dataset (``[[pipelines.rules]]``).

A rule names a workflow and conditions; all conditions given must hold. Matching looks
only at names (instrument, user, ``user/dataset``, the file names the journal recorded),
never at pixels, so the agent's after-delivery hook stays quick.

Examples
--------
>>> from autotx_lib.config import PipelineRule
>>> info = DatasetInfo(user="alice", name="screen1", path="/store/alice/screen1",
...                    instrument="scope-1", files=("A01_s1_w1.tif", "A02_s1_w1.tif"))
>>> rule = PipelineRule(workflow="previews", users=["alice"], file_types=[".tif"])
>>> explain_rule(rule, info)
(True, 'matches')
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotx_lib.config import PipelineRule


@dataclass(frozen=True)
class DatasetInfo:
    """What rules look at: who, where, and the names of the files."""

    user: str | None
    name: str
    path: str
    instrument: str | None = None
    files: tuple[str, ...] = field(default=())
    dataset_id: int | None = None

    @property
    def suffixes(self) -> set[str]:
        """The lower-case suffixes of the files (``.ome.tif`` counts as ``.tif`` too)."""
        found = set()
        for name in self.files:
            lower = name.lower()
            found.add(os.path.splitext(lower)[1])
            parts = Path(lower).suffixes
            if len(parts) > 1:
                found.add("".join(parts[-2:]))
        found.discard("")
        return found

    def is_plate(self) -> bool:
        """Whether the file names look like a screening plate (no file is opened)."""
        from autotx_lib.imaging.omero import looks_like_plate

        return looks_like_plate(self.files)


def folder_info(path: str | os.PathLike, *, user: str | None = None,
                instrument: str | None = None, dataset_id: int | None = None,
                limit: int = 20000) -> DatasetInfo:
    """A :class:`DatasetInfo` from a folder on disk (its file names, at most ``limit``)."""
    folder = Path(path)
    names: list[str] = []
    if folder.is_file():
        names = [folder.name]
    else:
        for _root, _dirs, files in os.walk(folder):
            names.extend(files)
            if len(names) >= limit:
                break
    return DatasetInfo(user=user if user is not None else folder.parent.name, name=folder.name,
                       path=str(folder), instrument=instrument, files=tuple(names),
                       dataset_id=dataset_id)


def explain_rule(rule: PipelineRule, info: DatasetInfo) -> tuple[bool, str]:
    """Whether ``rule`` matches ``info``, and why not (the first condition that fails)."""
    if rule.instruments and info.instrument not in rule.instruments:
        return False, f"instrument {info.instrument!r} is not one of {rule.instruments}"
    if rule.users and info.user not in rule.users:
        return False, f"user {info.user!r} is not one of {rule.users}"
    target = f"{info.user}/{info.name}" if info.user else info.name
    if rule.paths and not any(fnmatch.fnmatch(target, glob) or fnmatch.fnmatch(info.path, glob)
                              for glob in rule.paths):
        return False, f"{target} matches none of the paths {rule.paths}"
    if rule.file_types and not info.suffixes & set(rule.file_types):
        return False, f"no file of type {', '.join(rule.file_types)}"
    if rule.plate is not None and info.is_plate() != rule.plate:
        return False, "not a plate" if rule.plate else "a plate"
    return True, "matches"


def matching_rules(rules: Iterable[PipelineRule], info: DatasetInfo) -> list[PipelineRule]:
    """The rules that match ``info``, in configuration order."""
    return [rule for rule in rules if explain_rule(rule, info)[0]]


def explain(rules: Sequence[PipelineRule], info: DatasetInfo) -> list[dict[str, Any]]:
    """One line per rule: workflow, matched, why (for ``autotx pipelines rules``)."""
    lines = []
    for index, rule in enumerate(rules, 1):
        matched, why = explain_rule(rule, info)
        lines.append({"rule": index, "workflow": rule.workflow, "matched": matched, "why": why})
    return lines


__all__ = ["DatasetInfo", "folder_info", "explain_rule", "matching_rules", "explain"]
