"""The hub's configuration (``hub.toml``): a small pydantic model.

A minimal file::

    database = "sqlite:////srv/autotx-hub/hub.sqlite"   # or postgresql+psycopg://...
    host = "127.0.0.1"
    port = 8765

A relative SQLite path is taken relative to the folder of ``hub.toml``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autotx_lib.errors import ConfigError, ConfigProblem
from autotx_lib.hub.auth import TOKEN_CACHE_SECONDS


class HubSettings(BaseModel):
    """What ``autotx hub serve`` needs.

    Examples
    --------
    >>> HubSettings(database="sqlite://").port
    8765
    """

    model_config = ConfigDict(extra="forbid")

    database: str = Field(description="SQLAlchemy URL of the hub's own database.")
    host: str = Field("127.0.0.1", description="Address to bind; non-loopback needs TLS.")
    port: int = Field(8765, ge=0, le=65535)
    ssl_certfile: Path | None = Field(None, description="PEM certificate (TLS).")
    ssl_keyfile: Path | None = Field(None, description="PEM private key (TLS).")
    max_body_bytes: int = Field(2_000_000, gt=0, description="Larger requests get 413.")
    lost_after_heartbeats: int = Field(3, ge=1, description="An agent silent for this many "
                                       "of its heartbeat intervals is shown as lost.")
    command_ttl_seconds: float = Field(7 * 86400, gt=0, description="A command an agent has "
                                       "not picked up by then expires (default: a week).")
    token_cache_seconds: float = Field(TOKEN_CACHE_SECONDS, ge=0, description="A verified token is "
                                       "remembered this long: a token revoked with `autotx "
                                       "hub token revoke` stops working within this time "
                                       "(at once when revoked through the API). 0: no cache.")

    @field_validator("database")
    @classmethod
    def _is_a_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError("not a database URL; e.g. 'sqlite:////srv/hub/hub.sqlite' or "
                             "'postgresql+psycopg://hub@db.example.org/autotx_hub'") from None
        return value


def load_hub_settings(path: str | os.PathLike[str]) -> HubSettings:
    """Read ``hub.toml``; every problem is reported at once as a ConfigError."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read it: {error.strerror}",
                                                    "check the path given with -c")]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), [ConfigProblem("", f"not valid TOML: {error}",
                                                    "fix the syntax")]) from None
    database = data.get("database")
    if isinstance(database, str) and database.startswith("sqlite:///") \
            and not database.startswith("sqlite:////"):
        relative = database.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            data["database"] = f"sqlite:///{(path.parent / relative).resolve()}"
    try:
        return HubSettings(**data)
    except ValidationError as error:
        problems = [ConfigProblem(".".join(str(p) for p in e["loc"]), e["msg"],
                                  "add this key" if e["type"] == "missing" else "fix the value")
                    for e in error.errors()]
        raise ConfigError(str(path), problems) from None




def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or the name localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind_problem(settings: HubSettings, insecure: bool = False) -> str | None:
    """Why the hub must not start with these settings (None: fine).

    Tokens cross the network in every request, so a non-loopback address needs TLS
    (``ssl_certfile`` and ``ssl_keyfile``) unless ``insecure`` says so explicitly.
    """
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        return "TLS needs both ssl_certfile and ssl_keyfile"
    for path in (settings.ssl_certfile, settings.ssl_keyfile):
        if path is not None and not path.is_file():
            return f"{path} does not exist; give the PEM certificate and key files"
    if is_loopback(settings.host) or settings.ssl_certfile or insecure:
        return None
    return (f"refusing to serve on {settings.host} without TLS: tokens would cross the "
            "network in clear text. Give --ssl-certfile and --ssl-keyfile (or ssl_certfile "
            "and ssl_keyfile in hub.toml), or --insecure if you really mean it")


__all__ = ["HubSettings", "load_hub_settings", "is_loopback", "bind_problem"]
