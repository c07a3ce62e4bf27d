"""Plate layouts from OME metadata, and from well-named scenes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from autotx_lib.imaging.readers.types import PlateInfo, WellInfo, well_name

#: Standard plate formats (rows, columns), smallest first.
STANDARD_PLATES: tuple[tuple[int, int], ...] = (
    (2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48),
)

_WELL = re.compile(r"^\s*([A-Za-z]{1,2})\s*0*(\d{1,2})\s*$")


def row_index(letters: str) -> int:
    """0-based row of ``"A"`` (0), ``"H"`` (7), ``"AA"`` (26)."""
    index = 0
    for ch in letters.upper():
        index = index * 26 + (ord(ch) - ord("A") + 1)
    return index - 1


def smallest_standard_plate(rows_needed: int, columns_needed: int) -> tuple[int, int]:
    """The smallest standard plate (6-, 12-, 24-, 48-, 96-, 384-, 1536-well) holding a well."""
    for rows, columns in STANDARD_PLATES:
        if rows >= rows_needed and columns >= columns_needed:
            return rows, columns
    return rows_needed, columns_needed


def plate_from_ome(ome: Any, scene_ids: Sequence[str]) -> PlateInfo | None:
    """Plate layout from the first ``Plate`` of an ome-types ``OME`` object.

    Parameters
    ----------
    ome : ome_types.OME
        Parsed metadata.
    scene_ids : sequence of str
        Scene ids (``"Image:3"``) in scene order, to turn ``ImageRef`` into scene indices.

    Returns
    -------
    plate : PlateInfo or None
        None when the metadata has no plate.
    """
    plates = getattr(ome, "plates", None) or []
    if not plates:
        return None
    plate = plates[0]
    index_of = {sid: i for i, sid in enumerate(scene_ids)}
    wells = []
    for well in plate.wells:
        samples = sorted(well.well_samples, key=lambda s: s.index)
        fields = [
            index_of[s.image_ref.id] for s in samples
            if s.image_ref is not None and s.image_ref.id in index_of
        ]
        wells.append(WellInfo(well_name(well.row, well.column), int(well.row), int(well.column), fields))
    wells.sort(key=lambda w: (w.row, w.column))
    rows = plate.rows or (max((w.row for w in wells), default=0) + 1)
    columns = plate.columns or (max((w.column for w in wells), default=0) + 1)
    return PlateInfo(name=plate.name or plate.id, rows=int(rows), columns=int(columns), wells=wells)


def plate_from_scene_names(
    plate_name: str, scene_names: Sequence[str], *, rows: int | None = None, columns: int | None = None
) -> PlateInfo | None:
    """Plate layout when every scene is named after its well (``"D6"``, ``"B03"``...).

    Scenes named after the same well become that well's fields in scene order. The plate's
    size is taken from ``rows``/``columns`` when known, else the smallest standard plate that
    holds every well.

    Returns
    -------
    plate : PlateInfo or None
        None unless every scene name is a well name.
    """
    parsed = [_WELL.match(name or "") for name in scene_names]
    if not parsed or not all(parsed):
        return None
    by_well: dict[tuple[int, int], list[int]] = {}
    for index, match in enumerate(parsed):
        key = (row_index(match.group(1)), int(match.group(2)) - 1)
        by_well.setdefault(key, []).append(index)
    need_rows = max(r for r, _ in by_well) + 1
    need_cols = max(c for _, c in by_well) + 1
    if rows is None or columns is None:
        rows, columns = smallest_standard_plate(need_rows, need_cols)
    wells = [WellInfo(well_name(r, c), r, c, fields) for (r, c), fields in sorted(by_well.items())]
    return PlateInfo(name=plate_name, rows=rows, columns=columns, wells=wells)
