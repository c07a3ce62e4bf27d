"""``python -m autotx_lib.imaging.readers PATH [--backend NAME]``: print a file's summary."""

from __future__ import annotations

import argparse
import sys

from autotx_lib.errors import ReaderError
from autotx_lib.imaging.readers.summary import summarize


def main(argv: list[str] | None = None) -> int:
    """Print :func:`summarize` of each path; exit 2 if one cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m autotx_lib.imaging.readers",
                                     description="Summarise microscopy files.")
    parser.add_argument("paths", nargs="+", help="files to describe")
    parser.add_argument("--backend", default=None, help="force a backend, e.g. bioformats")
    args = parser.parse_args(argv)
    status = 0
    for path in args.paths:
        try:
            print(summarize(path, backend=args.backend))
        except ReaderError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
