"""Execute notebooks in place and store their widget state, so they show their widgets.

Rendered without a kernel (``jupyter nbconvert --to html``, GitHub, a docs site), a notebook
shows a widget only if the state of its widgets was saved with it; executed the plain way it
shows an empty ``Out[3]:`` instead. This runs each notebook top to bottom in its own folder
(as nbval does) with ``store_widget_state=True`` and writes it back.

Usage::

    python tools/execute_notebooks.py                       # every notebook in notebooks/
    python tools/execute_notebooks.py notebooks/transfer_monitor.ipynb

Sample files come from ``AUTOTX_SAMPLEDATA`` or ``../shared/sampledata`` (see
``autotx_lib.sampledata``). Exit status: 0 all executed; 1 a notebook failed (it is not
written); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute_notebook(path: Path, *, timeout: float = 600, kernel: str | None = None) -> None:
    """Run the notebook at ``path`` in its folder and save it with outputs and widget state.

    Parameters
    ----------
    path : Path
        An ``.ipynb`` file; it is overwritten only when every cell ran.
    timeout : float
        Seconds one cell may take.
    kernel : str, optional
        Kernel name; default: the notebook's own (``python3``).
    """
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    notebook = nbformat.read(path, as_version=4)
    kernel = kernel or notebook.metadata.get("kernelspec", {}).get("name", "python3")
    executor = ExecutePreprocessor(timeout=timeout, kernel_name=kernel,
                                   store_widget_state=True,
                                   record_timing=False)  # no timestamps: quiet diffs
    executor.preprocess(notebook, {"metadata": {"path": str(path.parent)}})
    nbformat.write(notebook, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to execute (default: every one in notebooks/)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        started = time.monotonic()
        try:
            execute_notebook(path, timeout=args.timeout)
        except Exception as error:  # a failing cell: report it, keep the stored notebook
            failed += 1
            print(f"FAILED {path}: {type(error).__name__}: {str(error)[-2000:]}",
                  file=sys.stderr)
            continue
        print(f"executed {path} in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
