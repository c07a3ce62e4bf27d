"""``python -m autotx_lib.cli``: the same as the ``autotx`` command."""

from autotx_lib.cli.main import main

main()
