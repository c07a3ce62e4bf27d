"""Machine facts printed in the headers of the benchmark scripts."""

from __future__ import annotations

import platform
from pathlib import Path


def mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, device, filesystem type) holding ``path``, from /proc/mounts."""
    best = ("/", "?", "?")
    real = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        device, point, fstype = line.split()[:3]
        if (real == point or real.startswith(point.rstrip("/") + "/")) and \
                len(point) >= len(best[0]):
            best = (point, device, fstype)
    return best


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"
