"""``autotx hub``: serve the facility hub, create its database and manage its tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import err, fail, handle_errors, out

hub_app = typer.Typer(help="The facility hub: one HTTP service every agent reports to.",
                      no_args_is_help=True)
token_app = typer.Typer(help="Hub tokens (roles: agent, viewer, operator, admin).",
                        no_args_is_help=True)
hub_app.add_typer(token_app, name="token")

HubConfig = Annotated[Path, typer.Option("--config", "-c", help="The hub's hub.toml "
                                         "(database, host, port).")]


def _settings(path: Path):
    from autotx_lib.hub.settings import load_hub_settings

    return handle_errors(load_hub_settings)(path)


def _store(path: Path):
    from autotx_lib.hub.store import HubStore

    return HubStore(_settings(path).database)


@hub_app.command("serve")
def serve_command(
    config: HubConfig,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: hub.toml's, "
                                             "else 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: hub.toml's).")] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="PEM certificate (TLS).")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="PEM private key (TLS).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve a non-loopback address "
                                           "without TLS (tokens in clear text).")] = False,
) -> None:
    """Serve the hub's HTTP API (docs at /docs) until Ctrl-C.

    A non-loopback address needs TLS, or --insecure.

    Exit status: 0 stopped; 2 bad hub.toml or a refused address.
    """
    from autotx_lib.hub.app import serve
    from autotx_lib.hub.settings import bind_problem

    settings = _settings(config)
    changes = {k: v for k, v in dict(host=host, port=port, ssl_certfile=ssl_certfile,
                                     ssl_keyfile=ssl_keyfile).items() if v is not None}
    settings = settings.model_copy(update=changes)
    problem = bind_problem(settings, insecure)
    if problem:
        raise fail(problem)
    scheme = "https" if settings.ssl_certfile else "http"
    err.print(f"hub on {scheme}://{settings.host}:{settings.port}/ (docs: /docs)", markup=False)
    handle_errors(serve)(settings, insecure=insecure)


@hub_app.command("init")
def init_command(config: HubConfig,
                 name: Annotated[str, typer.Option(help="The admin token's name.")] = "admin",
                 ) -> None:
    """Create the hub's database and print its first admin token (shown only now).

    Exit status: 0 done; 2 bad hub.toml, or the database is initialised already.
    """
    from autotx_lib.hub.app import init_hub

    token = handle_errors(init_hub)(_settings(config), name)
    err.print(f"hub database ready; admin token {name!r} (keep it; it is not shown again):",
              markup=False)
    out.print(token, markup=False, highlight=False)


@token_app.command("add")
def token_add(
    config: HubConfig,
    name: Annotated[str, typer.Argument(help="The token's name (for an agent: its agent id, "
                                        "i.e. its host_alias).")],
    role: Annotated[str, typer.Option(help="agent, viewer, operator or admin.")] = "viewer",
    agent_id: Annotated[str | None, typer.Option(help="agent role: the agent id it may push "
                                                 "as (default: NAME).")] = None,
) -> None:
    """Create a token and print it on the last line (shown only now).

    Exit status: 0 created; 2 bad hub.toml, unknown role or a name in use.
    """
    store = _store(config)
    try:
        token = store.add_token(name, role, agent_id)
        store.add_audit("(command line)", "token-add", name, role, "created")
    except ValueError as error:
        raise fail(str(error)) from None
    finally:
        store.close()
    err.print(f"token {name!r} ({role}); keep it, it is not shown again:", markup=False)
    out.print(token, markup=False, highlight=False)


@token_app.command("list")
def token_list(config: HubConfig) -> None:
    """List the tokens (names, roles, dates; never the tokens themselves).

    Exit status: 0 listed; 2 bad hub.toml.
    """
    from rich.table import Table

    store = _store(config)
    rows = store.tokens()
    store.close()
    table = Table("name", "role", "agent id", "created (UTC)", "revoked (UTC)")
    for row in rows:
        table.add_row(row.name, row.role, row.agent_id or "",
                      f"{row.created_at:%Y-%m-%d %H:%M}",
                      f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "")
    out.print(table)


@token_app.command("revoke")
def token_revoke(config: HubConfig,
                 name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token: every request with it gets 401 from now on.

    Exit status: 0 revoked; 2 no valid token of that name.
    """
    store = _store(config)
    try:
        if not store.revoke_token(name):
            raise fail(f"no valid token named {name!r} (see `autotx hub token list`)")
        store.add_audit("(command line)", "token-revoke", name, None, "revoked")
    finally:
        store.close()
    out.print(f"revoked {name}", markup=False)
