"""The facility hub: one HTTP service every agent reports to, and staff read and steer.

``autotx hub serve -c hub.toml`` runs it (:mod:`autotx_lib.hub.app`); agents push to it
from their journal (:mod:`autotx_lib.hub.reporter`) and pull their commands; people and
notebooks read it through :class:`autotx_lib.hub.client.HubClient`. Importing this package
loads nothing heavy.
"""
