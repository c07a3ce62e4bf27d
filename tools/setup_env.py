#!/usr/bin/env python3
"""Build the project's environment (``.venv``) from nothing but Python 3.11+ (and a JDK once).

Run by the README's two commands (``./autotx`` and ``./run-tests``); safe to run again:
it runs pip only when something is really missing, so an offline instrument PC keeps
working once set up.

Steps
-----
1. check Python >= 3.11;
2. check ``.venv``: create it when absent, and repair it when an interrupted set-up left
   it broken (no working Python: rebuilt; no pip: ``ensurepip``, which needs no network);
3. the extras wanted are those asked for now *and* those installed before (a stamp file
   in ``.venv`` records them): ``./autotx`` never undoes ``./run-tests``'s test tools;
4. nothing to do when the stamp says this pyproject.toml was installed with those extras;
   otherwise list the requirements (with their own extras) that ``.venv`` does not satisfy,
   and only if there are any (or the project is not installed) run pip: build
   python-javabridge from its sdist, patched for numpy 2 (see ARCHITECTURE.md), once
   (cached under ``~/.cache/autotx_lib/wheels``; this step needs a JDK), then install the
   project in editable mode with the extras (``--test`` adds the test tools). A changed
   pyproject.toml whose requirements are all met only re-installs the project, offline.

Only the standard library is used here: this script runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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


def venv_python(venv: Path = VENV) -> Path:
    """The Python of ``venv`` (``Scripts\\python.exe`` on Windows)."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


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


# Run by the venv's Python: 0 when it works and has pip, 3 when pip is missing.
_PROBE = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('pip') else 3)"


def probe_venv(venv: Path = VENV) -> str:
    """The state of ``venv``: ``"ok"``, ``"absent"``, ``"no-python"`` or ``"no-pip"``."""
    python = venv_python(venv)
    if not venv.exists():
        return "absent"
    if not python.exists():
        return "no-python"
    try:
        result = subprocess.run([str(python), "-c", _PROBE], capture_output=True, timeout=120)
    except OSError:  # a dangling link, a file that is not a program
        return "no-python"
    if result.returncode == 3:
        return "no-pip"
    return "ok" if result.returncode == 0 else "no-python"


def repair_venv(venv: Path = VENV) -> str:
    """Make ``venv`` a working virtualenv with pip; return what was done ("" for nothing).

    An absent or Python-less venv is (re)created (``--clear``: what an interrupted set-up
    left is of no use); a venv without pip gets it from ``ensurepip`` (no network needed).
    """
    state = probe_venv(venv)
    if state == "ok":
        return ""
    if state in ("absent", "no-python"):
        say(f"{'creating' if state == 'absent' else 'rebuilding the broken'} {venv}")
        run(sys.executable, "-m", "venv", "--clear", venv)
        done = "created" if state == "absent" else "rebuilt"
    else:
        say(f"{venv} has no pip (an interrupted set-up?): installing it with ensurepip")
        restore_pip(venv)
        done = "pip-restored"
    if probe_venv(venv) != "ok":
        fail(f"{venv} is still not usable; delete it and run this again (on Debian, "
             f"`apt-get install python3-venv` provides venv and ensurepip)")
    return done


def pip_works(venv: Path = VENV) -> bool:
    """Whether ``python -m pip --version`` runs in ``venv`` (pip may be there but broken)."""
    result = subprocess.run([str(venv_python(venv)), "-m", "pip", "--version"],
                            capture_output=True, timeout=120)
    return result.returncode == 0


def restore_pip(venv: Path = VENV) -> None:
    """Put a working pip into ``venv`` from ``ensurepip`` (no network), removing a broken one.

    ensurepip leaves an installed pip of its own version alone, however broken, so what is
    left of pip is removed first; nothing else in the venv is touched.
    """
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(venv_python(venv)), "-c", code], capture_output=True,
                          text=True, timeout=120).stdout.strip()
    if site:
        for leftover in [*Path(site).glob("pip"), *Path(site).glob("pip-*.dist-info")]:
            shutil.rmtree(leftover, ignore_errors=True)
    run(venv_python(venv), "-m", "ensurepip", "--upgrade")
    if not pip_works(venv):
        fail(f"pip does not work in {venv} even after ensurepip; delete {venv} and run again")


def ensure_build_tools(venv: Path = VENV) -> None:
    """numpy 2, setuptools, wheel and cython: what the javabridge build needs."""
    run(venv_python(venv), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(venv_python(venv), "-m", "pip", "install", "--quiet",
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


def build_javabridge_wheel(venv: Path = VENV) -> Path:
    """Return the cached patched wheel, building it first (with ``venv``) when missing."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    cached = sorted(WHEELS.glob(f"python_javabridge-{JAVABRIDGE_VERSION}-{tag}-*.whl"))
    if cached:
        return cached[-1]
    java_home = find_java_home()
    ensure_build_tools(venv)
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
        run(venv_python(venv), "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "-w", out, source, env=env)
        wheel = next(out.glob("*.whl"))
        return Path(shutil.copy2(wheel, WHEELS / wheel.name))


# command -> Debian package: the standard tools that check our manifests, a browser for the
# pages, and exFAT (through FUSE) for a destination on a Windows file system (a disk image)
TEST_TOOLS = {"xxhsum": "xxhash", "b3sum": "b3sum", "sha256sum": "coreutils",
              "chromium": "chromium", "mkfs.exfat": "exfatprogs",
              "mount.exfat-fuse": "exfat-fuse"}


def ensure_test_tools() -> None:
    """Install the tools the tests use (TEST_TOOLS), via apt-get when we may; else say so."""
    missing = sorted({pkg for cmd, pkg in TEST_TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None or getattr(os, "geteuid", lambda: -1)() != 0:
        say(f"note: {', '.join(missing)} not installed; the tests that use "
            f"them will skip (install with: apt-get install {' '.join(missing)})")
        return
    say(f"installing {', '.join(missing)} (Debian packages) for the tests")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env)
    if result.returncode != 0:
        say(f"note: could not install {', '.join(missing)}; the tests needing them will skip")


STAMP_NAME = ".autotx-setup-stamp"
BASE_EXTRAS = ("imaging", "viz", "postgres")


def pyproject_digest(root: Path = ROOT) -> str:
    """What the stamp remembers of the project: its pyproject.toml and this script."""
    parts = [(root / "pyproject.toml").read_text(), Path(__file__).read_text()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def read_stamp(venv: Path = VENV) -> dict:
    """The stamp ``{"pyproject": digest, "extras": [...]}``; ``{}`` when absent or old."""
    try:
        stamp = json.loads((venv / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def write_stamp(venv: Path, digest: str, extras: set[str]) -> None:
    (venv / STAMP_NAME).write_text(json.dumps({"pyproject": digest, "extras": sorted(extras)}))


def wanted_extras(requested: set[str], stamp: dict) -> set[str]:
    """The extras to have: asked for now, plus those installed before (never fewer)."""
    return set(requested) | set(stamp.get("extras", []))


def up_to_date(stamp: dict, digest: str, extras: set[str]) -> bool:
    """True when the stamp says this pyproject.toml was installed with all of ``extras``."""
    return stamp.get("pyproject") == digest and extras <= set(stamp.get("extras", []))


def requirements(extras: set[str], root: Path = ROOT) -> list[str]:
    """The project's requirements with ``extras`` (its self-references expanded)."""
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    name = project["name"].lower().replace("-", "_")
    found: list[str] = list(project.get("dependencies", []))
    todo, seen = sorted(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional.get(extra, []):
            match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*\[([^\]]*)\]\s*", requirement)
            if match and match.group(1).lower().replace("-", "_") == name:
                todo += [e.strip() for e in match.group(2).split(",") if e.strip()]
            else:
                found.append(requirement)
    return found


# Run by the venv's Python (argv[1]: JSON list of requirements; prints those not met,
# following each requirement's own extras, e.g. psycopg[binary] -> psycopg-binary).
_MISSING = r"""
import json, sys
import importlib.metadata as md
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

def unmet(text, extra, seen):
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        return []
    if str(req) in seen:
        return []
    seen.add(str(req))
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        return [text]
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return [f"{text} (installed: {version})"]
    missing = []
    for wanted in req.extras:
        for sub in md.requires(req.name) or []:
            if "extra" in sub:
                missing += unmet(sub, wanted, seen)
    return missing

seen, missing = set(), []
for text in json.loads(sys.argv[1]):
    missing += unmet(text, "", seen)
print(json.dumps(missing))
"""


def missing_requirements(wanted: list[str], venv: Path = VENV) -> list[str]:
    """The requirements in ``wanted`` that ``venv`` does not satisfy (asks its own Python)."""
    result = subprocess.run([str(venv_python(venv)), "-c", _MISSING, json.dumps(wanted)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        fail(f"could not check the packages of {venv}: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def project_installed(venv: Path = VENV, root: Path = ROOT) -> bool:
    """Whether ``venv`` has this project installed in editable mode from ``root``."""
    code = ("import importlib.metadata as md, json\n"
            "try:\n d = md.distribution('autotx_lib').read_text('direct_url.json') or '{}'\n"
            "except md.PackageNotFoundError:\n d = '{}'\n"
            "print(json.loads(d).get('url', ''))")
    result = subprocess.run([str(venv_python(venv)), "-I", "-c", code], capture_output=True,
                            text=True, timeout=120)
    return result.returncode == 0 and result.stdout.strip() == root.resolve().as_uri()


def install_project(extras: set[str], venv: Path = VENV, root: Path = ROOT) -> list[str]:
    """Install what ``venv`` lacks for the project at ``root`` with ``extras``.

    Returns the actions taken: ``[]`` when nothing was missing (pip did not run), else
    some of ``"pip-restored"`` (a broken pip), ``"javabridge"``, ``"pip-install"``,
    ``"project-refresh"`` (offline).
    """
    stamp = read_stamp(venv)
    extras = wanted_extras(extras, stamp)
    digest = pyproject_digest(root)
    if up_to_date(stamp, digest, extras):
        return []
    missing = missing_requirements(requirements(extras, root), venv)
    actions: list[str] = []
    refresh = not project_installed(venv, root) or (stamp and stamp.get("pyproject") != digest)
    if (missing or refresh) and not pip_works(venv):
        say(f"pip is broken in {venv}: installing it again with ensurepip")
        restore_pip(venv)
        actions.append("pip-restored")
    if missing:
        say(f"installing what .venv lacks: {', '.join(missing[:6])}"
            + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""))
        if any("javabridge" in m or "bioformats" in m for m in missing):
            wheel = build_javabridge_wheel(venv)
            run(venv_python(venv), "-m", "pip", "install", "--quiet", wheel)
            actions.append("javabridge")
        run(venv_python(venv), "-m", "pip", "install", "--quiet",
            "-e", f"{root}[{','.join(sorted(extras))}]")
        actions.append("pip-install")
    elif refresh:
        # every requirement is met: refresh the project's own metadata, offline
        run(venv_python(venv), "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-build-isolation", "-e", str(root))
        actions.append("project-refresh")
    write_stamp(venv, digest, extras)
    if actions:
        say("environment ready")
    return actions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true", help="also install the test tools")
    args = parser.parse_args(argv)
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before the venv exists
        fail(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    repair_venv(VENV)
    install_project(set(BASE_EXTRAS) | ({"test"} if args.test else set()), VENV)
    if args.test:
        ensure_test_tools()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
