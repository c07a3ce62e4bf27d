"""The imaging half: readers, plate QC, viewers, OMERO helpers.

Never imports :mod:`autotx_lib.transfer`; glue between the halves lives in
:mod:`autotx_lib.pipelines`.
"""
