"""The `autotx` command's own tests reuse the transfer tests' facility."""

from tests.transfer.conftest import facility, make_dataset, write_config  # noqa: F401
