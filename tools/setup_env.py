#!/usr/bin/env python3
"""Build the project's environment (``.venv``) from nothing but Python 3.11+ and a JDK.

Run by the README's two commands (``./autotx`` and ``./run-tests``); safe to run again:
it does nothing when the environment is already up to date.

Steps
-----
1. check Python >= 3.11 and a JDK (``javac`` or ``JAVA_HOME``);
2. create ``.venv`` and install numpy 2, setuptools, wheel and cython into it;
3. build python-javabridge from its sdist, patched for numpy 2 (see ARCHITECTURE.md),
   once, and cache the wheel under ``~/.cache/autotx_lib/wheels``;
4. install the project in editable mode with its extras (``--test`` adds the test tools).

Only the standard library is used here: this script runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
CACHE = Path(os.environ.get("AUTOTX_CACHE", Path.home() / ".cache" / "autotx_lib"))
WHEELS = CACHE / "wheels"

JAVABRIDGE_VERSION = "4.0.5"
JAVABRIDGE_SHA256 = "0cf3292466142468a6134c91c118d453497eaf0e76b59be442bf4985683dcccd"
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
# numpy 2 removed PyArray_Descr.subarray; the accessor macro is the supported way in.
JAVABRIDGE_PATCH = ("__pyx_v_d->subarray->shape", "PyDataType_SUBARRAY(__pyx_v_d)->shape")


def say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def fail(message: str) -> None:
    print(f"[setup] ERROR: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run(*args: str | Path, **kwargs) -> None:
    result = subprocess.run([str(a) for a in args], **kwargs)
    if result.returncode != 0:
        fail(f"command failed ({result.returncode}): {' '.join(str(a) for a in args)}")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def find_java_home() -> Path:
    """The JDK javabridge compiles against: JAVA_HOME, else the one ``javac`` belongs to."""
    env = os.environ.get("JAVA_HOME")
    if env and (Path(env) / "include" / "jni.h").exists():
        return Path(env)
    javac = shutil.which("javac")
    if javac:
        home = Path(os.path.realpath(javac)).parent.parent
        if (home / "include" / "jni.h").exists():
            return home
    fail(
        "no JDK found (javac and jni.h are needed to build python-javabridge, and a JVM to run "
        "Bio-Formats). Install one, e.g. `apt-get install openjdk-17-jdk-headless`, or set "
        "JAVA_HOME to a JDK's folder."
    )
    raise AssertionError  # unreachable


def ensure_venv() -> None:
    if not venv_python().exists():
        say(f"creating {VENV}")
        run(sys.executable, "-m", "venv", VENV)
    run(venv_python(), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(venv_python(), "-m", "pip", "install", "--quiet",
        "numpy>=2.0", "setuptools>=68", "wheel", "cython")


def download_sdist(project: str, filename: str, sha256: str, folder: Path) -> Path:
    """Download ``filename`` from the package index's page of ``project``; check its sha256."""
    page = f"{INDEX}/{project}/"
    html = urllib.request.urlopen(page, timeout=60).read().decode()
    match = re.search(r'href="([^"#]*' + re.escape(filename) + r')[^"]*"', html)
    if not match:
        fail(f"{filename} is not listed on {page}")
    url = urllib.parse.urljoin(page, match.group(1))
    say(f"downloading {filename}")
    data = urllib.request.urlopen(url, timeout=300).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        fail(f"{filename}: sha256 {digest} does not match the expected {sha256}")
    target = folder / filename
    target.write_bytes(data)
    return target


def build_javabridge_wheel(java_home: Path) -> Path:
    """Return the cached patched wheel, building it first when missing."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    cached = sorted(WHEELS.glob(f"python_javabridge-{JAVABRIDGE_VERSION}-{tag}-*.whl"))
    if cached:
        return cached[-1]
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist("python-javabridge",
                               f"python_javabridge-{JAVABRIDGE_VERSION}.tar.gz",
                               JAVABRIDGE_SHA256, Path(tmp))
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(tmp, filter="data")
            else:  # Python < 3.11.4
                archive.extractall(tmp)
        source = Path(tmp) / f"python_javabridge-{JAVABRIDGE_VERSION}"
        if not source.exists():
            source = Path(tmp) / f"python-javabridge-{JAVABRIDGE_VERSION}"
        c_file = source / "_javabridge.c"
        text = c_file.read_text()
        old, new = JAVABRIDGE_PATCH
        if old not in text:
            fail(f"the numpy 2 patch no longer applies to {c_file.name}; update JAVABRIDGE_PATCH")
        c_file.write_text(text.replace(old, new))
        say("building python-javabridge (patched for numpy 2); once, then cached")
        env = dict(os.environ, JAVA_HOME=str(java_home))
        out = Path(tmp) / "dist"
        run(venv_python(), "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "-w", out, source, env=env)
        wheel = next(out.glob("*.whl"))
        return Path(shutil.copy2(wheel, WHEELS / wheel.name))


# command -> Debian package, for tests that check our manifests with the standard tools
TEST_TOOLS = {"xxhsum": "xxhash", "b3sum": "b3sum", "sha256sum": "coreutils",
              "chromium": "chromium"}


def ensure_test_tools() -> None:
    """Install the checksum tools the tests use, via apt-get when we may; else say so."""
    missing = sorted({pkg for cmd, pkg in TEST_TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        say(f"note: {', '.join(missing)} not installed; the tests that check manifests with "
            f"them will skip (install with: apt-get install {' '.join(missing)})")
        return
    say(f"installing {', '.join(missing)} (Debian packages) for the tests")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env)
    if result.returncode != 0:
        say(f"note: could not install {', '.join(missing)}; the tests needing them will skip")


def stamp_of(extras: str) -> str:
    parts = [extras, (ROOT / "pyproject.toml").read_text(), Path(__file__).read_text()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def install_project(extras: str, java_home: Path) -> None:
    stamp_file = VENV / ".autotx-setup-stamp"
    stamp = stamp_of(extras)
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    ensure_venv()
    wheel = build_javabridge_wheel(java_home)
    say("installing the project and its dependencies")
    run(venv_python(), "-m", "pip", "install", "--quiet", wheel)
    run(venv_python(), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[{extras}]")
    stamp_file.write_text(stamp)
    say("environment ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true", help="also install the test tools")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before the venv exists
        fail(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    java_home = find_java_home()
    extras = "imaging,viz,postgres" + (",test" if args.test else "")
    install_project(extras, java_home)
    if args.test:
        ensure_test_tools()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
