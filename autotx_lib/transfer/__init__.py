"""The transfer half: readiness, verified copy, the agent, notifications, grace, status.

Never imports :mod:`autotx_lib.imaging`; glue between the halves lives in
:mod:`autotx_lib.pipelines`.
"""
