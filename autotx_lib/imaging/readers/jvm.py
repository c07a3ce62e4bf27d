"""The Java virtual machine that Bio-Formats runs in: started once, lazily; never restarted.

javabridge can start one JVM per process and cannot start another after it stops, so this
module starts it on first use (not at import), keeps it for the life of the process, and
stops it only at interpreter exit. Any thread may use it inside :func:`attached`, which
attaches the thread to the JVM and detaches it afterwards (dask worker threads read
through Bio-Formats this way).

The heap size comes from :func:`configure_jvm`, else the ``AUTOTX_JVM_HEAP`` environment
variable, else ``"2g"``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autotx_lib._optional import require
from autotx_lib.errors import MissingDependencyError

_lock = threading.Lock()
_state: dict[str, object] = {"started": False, "failed": None, "heap": None}

JAVA_INSTALL_HINT = (
    "Bio-Formats runs in Java and needs a Java runtime (JDK or JRE 11 or newer). Install one: "
    "`sudo apt-get install default-jdk-headless` (Debian/Ubuntu), "
    "`conda install -c conda-forge openjdk` (conda), or https://adoptium.net (Windows/macOS); "
    "then set JAVA_HOME to its folder if `java` is not on PATH, and restart Python."
)


class JavaUnavailableError(MissingDependencyError):
    """No usable Java runtime: Bio-Formats cannot run. The message says how to install one."""


def configure_jvm(*, max_heap_size: str) -> None:
    """Set the JVM heap before it starts, e.g. ``configure_jvm(max_heap_size="8g")``.

    Raises
    ------
    RuntimeError
        If the JVM is already running: javabridge cannot restart it with another heap.
    """
    with _lock:
        if _state["started"]:
            raise RuntimeError(
                f"the JVM already runs with max heap {_state['heap']}; it cannot be restarted "
                "in this process. Call configure_jvm() before the first Bio-Formats read, or set "
                "AUTOTX_JVM_HEAP before starting Python."
            )
        _state["heap"] = max_heap_size


def jvm_is_running() -> bool:
    """Return True once the JVM has been started in this process."""
    return bool(_state["started"])


def _java_home_problem() -> str | None:
    """Say why no Java runtime can be found, or None if one seems present."""
    home = os.environ.get("CP_JAVA_HOME") or os.environ.get("JAVA_HOME")
    if home:
        libjvm = list(Path(home).glob("**/libjvm.*")) if Path(home).is_dir() else []
        if not libjvm:
            return f"JAVA_HOME={home} holds no libjvm (not a Java installation)"
        return None
    if shutil.which("java") is None:
        return "no `java` on PATH and JAVA_HOME is not set"
    return None


def start_jvm() -> None:
    """Start the JVM with Bio-Formats on its class path, once; later calls return at once.

    Raises
    ------
    JavaUnavailableError
        If no Java runtime is installed or the JVM fails to start (with install steps).
    MissingDependencyError
        If python-javabridge or python-bioformats is not installed.
    """
    if _state["started"]:
        return
    with _lock:
        if _state["started"]:
            return
        if _state["failed"]:
            raise JavaUnavailableError(str(_state["failed"]))
        problem = _java_home_problem()
        if problem:
            _state["failed"] = f"cannot start Java: {problem}. {JAVA_INSTALL_HINT}"
            raise JavaUnavailableError(str(_state["failed"]))
        try:
            javabridge = require("javabridge", "to run Bio-Formats")
        except MissingDependencyError as error:
            if "libjvm" in str(error) or "java" in str(error).lower():
                _state["failed"] = f"cannot load Java: {error}. {JAVA_INSTALL_HINT}"
                raise JavaUnavailableError(str(_state["failed"])) from error
            raise
        bioformats = require("bioformats", "to read files through Bio-Formats")
        heap = _state["heap"] or os.environ.get("AUTOTX_JVM_HEAP", "2g")
        try:
            javabridge.start_vm(class_path=bioformats.JARS, run_headless=True, max_heap_size=heap)
        except Exception as error:
            _state["failed"] = f"the JVM did not start ({error}). {JAVA_INSTALL_HINT}"
            raise JavaUnavailableError(str(_state["failed"])) from error
        _state["started"] = True
        _state["heap"] = heap
        # javabridge's JVM thread is not a daemon: stop it before Python joins threads at
        # exit (plain atexit runs after that join and would hang forever).
        register = getattr(threading, "_register_atexit", atexit.register)
        register(_stop_at_exit)
        _silence_bioformats_logging(javabridge)


def _silence_bioformats_logging(javabridge: object) -> None:
    """Bio-Formats logs at DEBUG/INFO by default; keep warnings and errors only."""
    try:
        javabridge.static_call(
            "loci/common/DebugTools", "setRootLevel", "(Ljava/lang/String;)V", "WARN"
        )
        # "Unknown Immersion value 'null'": one line per objective of many files, not actionable
        logger = javabridge.static_call(
            "org/slf4j/LoggerFactory", "getLogger", "(Ljava/lang/String;)Lorg/slf4j/Logger;",
            "ome.xml.model.enums.handlers",
        )
        level = javabridge.static_call(
            "ch/qos/logback/classic/Level", "toLevel",
            "(Ljava/lang/String;)Lch/qos/logback/classic/Level;", "ERROR",
        )
        javabridge.call(logger, "setLevel", "(Lch/qos/logback/classic/Level;)V", level)
    except Exception as error:  # logging set-up is cosmetic; never fail a read over it
        warnings.warn(
            f"Bio-Formats logging could not be quietened ({type(error).__name__}: {error}); "
            "its INFO messages may appear on stderr, reading is not affected",
            RuntimeWarning, stacklevel=2,
        )


def _stop_at_exit() -> None:
    """Stop the JVM when the interpreter exits (otherwise exit can hang on Java threads)."""
    import javabridge

    javabridge.kill_vm()


@contextmanager
def attached() -> Iterator[None]:
    """Run a block with the current thread attached to the JVM (starting it if needed).

    Nested use is cheap; a thread that was not attached before is detached afterwards.

    Examples
    --------
    >>> with attached():  # doctest: +SKIP
    ...     reader.openBytes(0)
    """
    start_jvm()
    import javabridge

    javabridge.attach()
    try:
        yield
    finally:
        javabridge.detach()


class JavaCallError(RuntimeError):
    """A Java method threw: the message is one line, ``"FormatException: why"``.

    Raised by :func:`call` instead of javabridge's ``JavaException``, whose construction
    prints the Java stack trace on stderr and whose text is ``<Java object at 0x...>`` when
    the Java exception has no message.

    Attributes
    ----------
    java_class : str
        The Java exception's class, e.g. ``"loci.formats.FormatException"``.
    """

    def __init__(self, java_class: str, message: str):
        self.java_class = java_class
        super().__init__(f"{java_class.rsplit('.', 1)[-1]}: {message}" if message
                         else java_class.rsplit(".", 1)[-1])


def _pending_error(env: object) -> JavaCallError | None:
    """Take the pending Java exception (if any) off the thread, as a JavaCallError."""
    throwable = env.exception_occurred()
    if throwable is None:
        return None
    env.exception_clear()  # before any other call: JNI forbids calls with one pending
    import javabridge

    java_class = javabridge.call(
        javabridge.call(throwable, "getClass", "()Ljava/lang/Class;"), "getName",
        "()Ljava/lang/String;",
    )
    message = javabridge.call(throwable, "getMessage", "()Ljava/lang/String;")
    cause = javabridge.call(throwable, "getCause", "()Ljava/lang/Throwable;")
    if not message and cause is not None:  # wrapped: the cause says what happened
        message = javabridge.call(cause, "toString", "()Ljava/lang/String;")
    first_line = (message or "").strip().splitlines()
    return JavaCallError(java_class, first_line[0] if first_line else "")


def call(obj: object, method: str, signature: str, *args: object) -> object:
    """``javabridge.call`` without the Java stack trace on stderr; raises :class:`JavaCallError`.

    Call it inside :func:`attached`. Arguments and result are converted as javabridge
    does (str to java.lang.String, int, bool...).
    """
    import javabridge
    from javabridge import jutil

    env = javabridge.get_env()
    klass = env.get_object_class(obj)
    method_id = env.get_method_id(klass, method, signature)
    if method_id is None:
        error = _pending_error(env)
        raise error or JavaCallError("NoSuchMethodError", f"{method}{signature}")
    arg_sigs = jutil.split_sig(signature[1:signature.find(")")])
    result = env.call_method(obj, method_id, *jutil.get_nice_args(args, arg_sigs))
    error = _pending_error(env)
    if error is not None:
        raise error
    return jutil.get_nice_result(result, signature[signature.find(")") + 1:])
