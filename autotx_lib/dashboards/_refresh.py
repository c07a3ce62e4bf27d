"""Background updates shared by the dashboards that watch something that changes."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("autotx")


class PeriodicRefresh:
    """A mixin: call :meth:`refresh` every :attr:`interval` seconds in a daemon thread.

    A dashboard sets ``interval`` and ``refresh_name`` (the thread's name), calls
    :meth:`_init_refresh` in its ``__init__`` and may override :meth:`_tick` (what one
    update does, ``refresh()`` by default) and :meth:`_update_failed` (show the error).
    One failed update (a journal briefly locked, a hub away) is logged and shown; the
    next one is tried all the same.
    """

    interval: float
    refresh_name = "autotx-dashboard"

    def refresh(self) -> None:  # pragma: no cover - every dashboard defines it
        raise NotImplementedError

    def _init_refresh(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start (or restart) the background updates every :attr:`interval` seconds."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.refresh_name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._tick()
            except Exception as error:  # noqa: BLE001 - one failed update is not fatal
                log.warning("%s: update failed: %s", self.refresh_name, error)
                self._update_failed(error)

    def _tick(self) -> None:
        self.refresh()

    def _update_failed(self, error: Exception) -> None:
        """Show that an update failed (nothing by default: it is logged)."""

    @property
    def running(self) -> bool:
        """Whether the background updates are running."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the background updates (the widgets stay on screen, frozen)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 3 * self.interval))
        self._thread = None
