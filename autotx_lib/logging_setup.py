"""Logging for the agent: a rotating log file when configured; never a secret in it."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

from autotx_lib.config import Config

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(config: Config, *, max_bytes: int = 10_000_000, backups: int = 5) -> None:
    """Send the ``autotx`` logger to ``config.log_file`` (rotating), at ``config.log_level``.

    Idempotent: calling it again replaces the file handler it added before.
    """
    logger = logging.getLogger("autotx")
    logger.setLevel(config.log_level)
    for handler in list(logger.handlers):
        if getattr(handler, "_autotx", False):
            logger.removeHandler(handler)
            handler.close()
    if config.log_file is None:
        return
    config.log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(config.log_file, maxBytes=max_bytes, backupCount=backups,
                                  encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler._autotx = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
