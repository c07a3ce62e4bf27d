#!/usr/bin/env python3
"""Install the optional OMERO extra (omero-py) into ``.venv``, building zeroc-ice first.

One command, safe to run again::

    python3 tools/setup_omero.py

omero-py needs zeroc-ice 3.6.5, whose source release does not compile on Python 3.11
as is (see ARCHITECTURE.md). This script

1. checks that ``.venv`` exists (``python3 tools/setup_env.py`` makes it);
2. downloads the zeroc-ice 3.6.5 sdist from the package index and checks its sha256;
3. applies the two one-line fixes (drop ``#include <eval.h>``; replace
   ``PyThreadState_GET()->frame`` with ``PyEval_GetFrame()``);
4. builds the wheel with ``nice -n 19`` (several minutes on 2 cores; the machine is shared),
   once, and caches it under ``~/.cache/autotx_lib/wheels``;
5. installs that wheel and ``autotx_lib[omero]`` into ``.venv``, then checks that
   ``import omero.gateway`` works.

Needs a C++ compiler and the OpenSSL and bzip2 development headers (Debian:
``apt-get install g++ libssl-dev libbz2-dev``). Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setup_env import (  # noqa: E402 - the shared set-up helpers live beside this script
    ROOT,
    VENV,
    WHEELS,
    download_sdist,
    fail,
    run,
    say,
    venv_python,
)

ICE_VERSION = "3.6.5"
ICE_SDIST = f"zeroc-ice-{ICE_VERSION}.tar.gz"
ICE_SHA256 = "4235ffeb605bcd4e22e716577f7d61e4aa1bc82f65276bb542701a81b7933356"
# (what, replacement, why): Python 3.11 removed eval.h and made PyFrameObject opaque.
ICE_PATCHES = (
    ("#include <eval.h>", "", "eval.h no longer exists in Python 3.11"),
    ("PyThreadState_GET()->frame", "PyEval_GetFrame()",
     "PyThreadState.frame is private since Python 3.11"),
)
HEADERS = {"openssl/ssl.h": "libssl-dev", "bzlib.h": "libbz2-dev"}


def check_prerequisites() -> None:
    if not venv_python().exists():
        fail(f"{VENV} does not exist; run `python3 tools/setup_env.py` first")
    if shutil.which("g++") is None and shutil.which("c++") is None:
        fail("no C++ compiler found; install one, e.g. `apt-get install g++`")
    missing = [pkg for header, pkg in HEADERS.items()
               if not any((Path(d) / header).exists() for d in ("/usr/include", "/usr/local/include"))]
    if missing:
        fail(f"missing development headers; install them, e.g. `apt-get install {' '.join(missing)}`")


def patch_sources(source: Path) -> int:
    """Apply :data:`ICE_PATCHES` to every C/C++ file under ``source``; return files changed."""
    applied = {old: 0 for old, _, _ in ICE_PATCHES}
    changed = 0
    for path in sorted(source.rglob("*")):
        if path.suffix not in {".c", ".cpp", ".h"} or not path.is_file():
            continue
        text = path.read_text(errors="surrogateescape")
        new_text = text
        for old, new, _ in ICE_PATCHES:
            if old in new_text:
                applied[old] += new_text.count(old)
                new_text = new_text.replace(old, new)
        if new_text != text:
            path.write_text(new_text, errors="surrogateescape")
            changed += 1
    for old, _, why in ICE_PATCHES:
        if not applied[old]:
            fail(f"the fix for '{why}' no longer applies ('{old}' not found); update ICE_PATCHES")
    return changed


def build_ice_wheel() -> Path:
    """Return the cached patched zeroc-ice wheel, building it first when missing."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    py = subprocess.run([str(venv_python()), "-c",
                         "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
                        capture_output=True, text=True, check=True).stdout.strip() or tag
    cached = sorted(WHEELS.glob(f"zeroc_ice-{ICE_VERSION}-{py}-*.whl"))
    if cached:
        say(f"using cached {cached[-1].name}")
        return cached[-1]
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist("zeroc-ice", ICE_SDIST, ICE_SHA256, Path(tmp))
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(tmp, filter="data")
            else:  # Python < 3.11.4
                archive.extractall(tmp)
        source = Path(tmp) / f"zeroc-ice-{ICE_VERSION}"
        files = patch_sources(source)
        say(f"patched {files} source file(s) for Python 3.11")
        say("building zeroc-ice (nice -n 19; several minutes on 2 cores); once, then cached")
        started = time.monotonic()
        out = Path(tmp) / "dist"
        nice = ["nice", "-n", "19"] if shutil.which("nice") else []
        run(*nice, venv_python(), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "-w", out, source)
        say(f"built in {time.monotonic() - started:.0f} s")
        wheel = next(out.glob("*.whl"))
        return Path(shutil.copy2(wheel, WHEELS / wheel.name))


def check_import() -> None:
    result = subprocess.run(
        [str(venv_python()), "-c", "import omero.gateway, Ice; print(Ice.stringVersion())"],
        capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"omero-py was installed but `import omero.gateway` fails:\n{result.stderr}")
    say(f"import omero.gateway works (Ice {result.stdout.strip()})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-only", action="store_true",
                        help="build and cache the zeroc-ice wheel, install nothing")
    args = parser.parse_args(argv)
    check_prerequisites()
    wheel = build_ice_wheel()
    if args.wheel_only:
        say(f"wheel cached at {wheel}")
        return 0
    say("installing zeroc-ice and autotx_lib[omero]")
    run(venv_python(), "-m", "pip", "install", "--quiet", wheel)
    run(venv_python(), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[omero]")
    check_import()
    say("OMERO extra ready")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
