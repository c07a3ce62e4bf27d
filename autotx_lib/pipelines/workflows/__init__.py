"""The built-in workflows: ``plate-qc``, ``previews``, ``omero-import``.

Each module defines one :class:`~autotx_lib.pipelines.registry.Workflow`; the registry
imports them by name when first used (so a missing extra fails only that workflow).
"""
