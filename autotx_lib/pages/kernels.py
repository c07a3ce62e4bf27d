"""A kernel manager for served pages: a bound on kernels, and kernels nobody watches are culled.

Every page load starts a kernel (a Python process of 100+ MB). Voila shuts it down when the
browser tab closes, but a load that never connects (a script, a crashed browser, a lost
network) leaves it running. This manager, given to Voila with
``--VoilaConfiguration.multi_kernel_manager_class=autotx_lib.pages.kernels.BoundedKernelManager``:

- refuses a page load with HTTP 503 and a message saying what to do when ``max_kernels``
  kernels are running;
- shuts down a kernel that no browser has been connected to for ``cull_idle_timeout``
  seconds, checked every ``cull_interval`` seconds. Unlike Jupyter's own culling, this
  counts time without a connected page, not time without kernel activity: a dashboard's
  refresh timer keeps its kernel "active" forever, watched or not.

Only Voila's serving process imports this module (it needs jupyter_server).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer


class BoundedKernelManager(AsyncMappingKernelManager):
    """At most ``max_kernels`` kernels; kernels without a connected page are culled."""

    max_kernels = Integer(4, config=True, help="Most kernels (open pages) at once; "
                          "a load beyond gets HTTP 503.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._unwatched_since: dict[str, float] = {}
        self._start_lock = asyncio.Lock()

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs: Any) -> str:
        """Start a kernel, or raise HTTP 503 when ``max_kernels`` are running."""
        if kernel_id is not None and kernel_id in self:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        async with self._start_lock:  # two loads at once must not both pass the check
            running = len(self.list_kernel_ids())
            if running >= self.max_kernels:
                minutes = max(1, round(self.cull_idle_timeout / 60))
                raise web.HTTPError(
                    503, reason="Too many open pages",
                    log_message=(
                        f"{running} dashboard pages are open, the most this server allows "
                        f"(autotx dashboard --max-pages {self.max_kernels}). Close a page "
                        f"you no longer watch and reload this one; a page left without a "
                        f"browser is closed after {minutes} min."))
            return await super().start_kernel(**kwargs)

    def notify_connect(self, kernel_id: str) -> None:
        super().notify_connect(kernel_id)
        self._unwatched_since.pop(kernel_id, None)

    def notify_disconnect(self, kernel_id: str) -> None:
        super().notify_disconnect(kernel_id)
        if kernel_id in self and self._kernel_connections.get(kernel_id, 0) <= 0:
            self._unwatched_since[kernel_id] = time.monotonic()  # the last page went away

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """Shut the kernel down when no page has been connected for ``cull_idle_timeout`` s.

        The clock starts when the last page disconnects, or, for a page never connected,
        when its kernel is first seen idle (the page has been rendered and sent): a browser
        has ``cull_idle_timeout`` seconds to connect.
        """
        kernel = self._kernels[kernel_id]
        state = getattr(kernel, "execution_state", None)
        if state == "dead":
            await super().cull_kernel_if_idle(kernel_id)
            return
        if self._kernel_connections.get(kernel_id, 0) > 0:
            self._unwatched_since.pop(kernel_id, None)
            return
        if state == "starting" or (state == "busy" and not self.cull_busy):
            self._unwatched_since.pop(kernel_id, None)  # still rendering the page
            return
        now = time.monotonic()
        unwatched = now - self._unwatched_since.setdefault(kernel_id, now)
        if unwatched > self.cull_idle_timeout:
            self.log.warning("Culling kernel %s: no page connected for %d s",
                             kernel_id, unwatched)
            await ensure_async(self.shutdown_kernel(kernel_id))

    async def shutdown_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> None:
        self._unwatched_since.pop(kernel_id, None)
        await super().shutdown_kernel(kernel_id, *args, **kwargs)
