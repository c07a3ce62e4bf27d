"""Talk to the hub from Python: :class:`HubClient` (httpx), answers as dicts or DataFrames.

Examples
--------
>>> hub = HubClient("https://hub.example.org:8765", token)          # doctest: +SKIP
>>> hub.agents()                      # one row per instrument PC      # doctest: +SKIP
>>> hub.stats()["day"].head()         # datasets, bytes... per day x instrument  # doctest: +SKIP
>>> hub.command("pc-confocal1", "suspend", reason="laser service")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from autotx_lib.errors import HubError

if TYPE_CHECKING:
    import pandas as pd

STATS_TABLES = ("day", "user", "destination", "runs", "errors")


class HubClient:
    """A client of the hub's HTTP API.

    Parameters
    ----------
    url : str
        The hub's base URL, e.g. ``http://127.0.0.1:8765``.
    token : str
        A token of the right role (viewer to read, operator for commands, agent to push).
    timeout : float
        Seconds to wait for the hub on each request.
    verify : bool or str
        TLS verification: True (system CAs), False, or a CA bundle path (self-signed hub).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 10.0,
                 verify: bool | str = True):
        import ssl

        import httpx

        if isinstance(verify, str):  # a CA bundle, e.g. the hub's self-signed certificate
            verify = ssl.create_default_context(cafile=verify)
        if url.startswith("http://"):
            # no TLS on plain HTTP: nothing to verify, so no certificates to load (httpx
            # loads the system's CAs up front otherwise: 40 to 400 ms of CPU)
            verify = False
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, verify=verify,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the JSON answer, or HubError with the hub's message and status."""
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise HubError(f"cannot reach the hub at {self.url}: {error.__class__.__name__}: "
                           f"{error}; check the URL and that `autotx hub serve` runs") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise HubError(f"the hub answered {response.status_code} to {method} {path}: "
                           f"{message}", response.status_code)
        return response.json() if response.content else None

    # --- reading ------------------------------------------------------------------------

    def agents(self) -> pd.DataFrame:
        """Every agent (state, last seen, what it does, queue length...), one row each."""
        import pandas as pd

        rows = self.request("GET", "/agents")
        return pd.DataFrame(rows).set_index("id") if rows else pd.DataFrame()

    def agent(self, agent_id: str) -> dict[str, Any]:
        """One agent in full (with its last status snapshot)."""
        return self.request("GET", f"/agents/{agent_id}")

    def datasets(self, *, agent: str | None = None, user: str | None = None,
                 state: str | None = None, since: dt.datetime | None = None,
                 until: dt.datetime | None = None, limit: int = 1000) -> pd.DataFrame:
        """Datasets matching the filters, newest first (up to ``limit``, paged through)."""
        import pandas as pd

        return pd.DataFrame(self._pages("/datasets", limit, agent=agent, user=user,
                                        state=state, since=since, until=until))

    def runs(self, *, agent: str | None = None, status: str | None = None,
             workflow: str | None = None, user: str | None = None,
             since: dt.datetime | None = None, until: dt.datetime | None = None,
             limit: int = 1000) -> pd.DataFrame:
        """Pipeline runs of the agents matching the filters, newest first (``since`` and
        ``until`` bound their creation)."""
        import pandas as pd

        return pd.DataFrame(self._pages("/runs", limit, agent=agent, status=status,
                                        workflow=workflow, user=user, since=since, until=until))

    def sessions(self, *, agent: str | None = None, user: str | None = None,
                 open_only: bool = False, since: dt.datetime | None = None,
                 until: dt.datetime | None = None, limit: int = 1000) -> pd.DataFrame:
        """Instrument sessions matching the filters, newest first (``open_only``: those not
        ended)."""
        import pandas as pd

        return pd.DataFrame(self._pages("/sessions", limit, agent=agent, user=user,
                                        open=open_only or None, since=since, until=until))

    def _pages(self, path: str, limit: int, **filters: Any) -> list[dict]:
        """Up to ``limit`` items of a paged list route, page after page."""
        params = {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                  for k, v in filters.items() if v is not None}
        items: list[dict] = []
        while len(items) < limit:
            page = self.request("GET", path, params={
                **params, "limit": min(1000, limit - len(items)), "offset": len(items)})
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                break
        return items

    def dataset(self, agent_id: str, dataset_id: int) -> dict[str, Any]:
        """One dataset with its delivery and events."""
        return self.request("GET", f"/datasets/{agent_id}/{dataset_id}")

    def events(self, *, agent: str | None = None, kind: str | None = None,
               level: str | None = None, after: int | None = None,
               limit: int = 100) -> pd.DataFrame:
        """Events, oldest first (pass the last ``id`` seen as ``after`` to poll)."""
        import pandas as pd

        params = {k: v for k, v in dict(agent=agent, kind=kind, level=level, after=after,
                                        limit=limit).items() if v is not None}
        return pd.DataFrame(self.request("GET", "/events", params=params)["items"])

    def stats(self, name: str | None = None, *,
              since: dt.datetime | None = None) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """Statistics tables: "day" (x agent), "user", "destination", "runs" (pipeline
        runs per day x agent x workflow), "errors".

        Without ``name``: a dict of all five DataFrames.
        """
        import pandas as pd

        params = {"since": since.isoformat()} if since else {}
        if name is None:
            return {n: self.stats(n, since=since) for n in STATS_TABLES}
        return pd.DataFrame(self.request("GET", f"/stats/{name}", params=params))

    # --- commands -----------------------------------------------------------------------

    def command(self, agent_id: str, action: str, *, expires_in_s: float | None = None,
                **args: Any) -> dict[str, Any]:
        """Queue a command: "suspend" (reason=...), "resume", "set_bandwidth" (value=...),
        "requeue" (dataset_id=...). Returns it (its ``id`` to follow with :meth:`commands`)."""
        body = {"agent_id": agent_id, "action": action, "args": args}
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return self.request("POST", "/commands", json=body)

    def commands(self, *, agent: str | None = None, state: str | None = None) -> pd.DataFrame:
        """Commands, newest first, with their state and result."""
        import pandas as pd

        params = {k: v for k, v in dict(agent=agent, state=state).items() if v is not None}
        return pd.DataFrame(self.request("GET", "/commands", params=params))

    def get_command(self, command_id: int) -> dict[str, Any]:
        """One command (state: pending, delivered, done, failed, expired)."""
        return self.request("GET", f"/commands/{command_id}")


def hub_client(url: str, token: str, **kwargs: Any) -> HubClient:
    """A :class:`HubClient` (the short name for notebooks)."""
    return HubClient(url, token, **kwargs)


__all__ = ["HubClient", "hub_client"]
