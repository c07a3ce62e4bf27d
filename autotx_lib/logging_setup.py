"""Logging for the agent: a rotating log file when configured; never a secret in it.

The log names users, datasets and mail addresses, so its files are created readable by
the agent's user only (mode 0600, on POSIX systems), rotated files included.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from typing import IO

from autotx_lib.config import Config, config_warnings

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A :class:`RotatingFileHandler` whose files only their owner can read (0600)."""

    def _open(self) -> IO[str]:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # a file an older version left readable by everyone
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)  # noqa: SIM115


def configure_logging(config: Config, *, max_bytes: int = 10_000_000, backups: int = 5) -> None:
    """Send the ``autotx`` logger to ``config.log_file`` (rotating), at ``config.log_level``.

    The files are created with mode 0600. Then every warning of
    :func:`autotx_lib.config.config_warnings` (e.g. a password file other users can read)
    is logged, so it is in the agent's log from its start. Idempotent: calling it again
    replaces the file handler it added before.
    """
    logger = logging.getLogger("autotx")
    logger.setLevel(config.log_level)
    for handler in list(logger.handlers):
        if getattr(handler, "_autotx", False):
            logger.removeHandler(handler)
            handler.close()
    if config.log_file is not None:
        config.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = PrivateRotatingFileHandler(config.log_file, maxBytes=max_bytes,
                                             backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._autotx = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    for warning in config_warnings(config):
        logger.warning("configuration: %s", warning)
