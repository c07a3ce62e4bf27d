"""The few OME-XML facts every image needs, read without building the whole OME model.

ome-types builds a complete, validated model: right for users who ask for
``image.metadata.ome``, but its first parse in a process costs a few hundred milliseconds
and every parse tens. Pixel sizes, channel names and wavelengths, acquisition time,
objective and time increment are a handful of attributes: :func:`summarize_ome` reads them
with lxml (or the standard library) in about a millisecond, for any OME schema version.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from autotx_lib.imaging.readers.types import Objective, PhysicalPixelSizes

_TO_MICROMETRE = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4,
                  "pm": 1e-6}
_TO_NANOMETRE = {"nm": 1.0, "µm": 1e3, "um": 1e3, "pm": 1e-3, "Å": 0.1, "m": 1e9, "mm": 1e6}
_TO_SECOND = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}


@dataclass
class OmeImage:
    """What one OME ``Image`` says, in micrometres, nanometres and seconds."""

    id: str
    name: str
    pixel_sizes: PhysicalPixelSizes
    channel_names: list[str]
    wavelengths: list[tuple[float | None, float | None]]
    acquisition_time: datetime | None
    objective: Objective | None
    time_increment: float | None


@dataclass
class OmeSummary:
    """Every ``Image`` of an OME-XML document, and whether it describes a plate."""

    images: list[OmeImage] = field(default_factory=list)
    has_plate: bool = False


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(element: Any, name: str) -> Any:
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: Any, name: str) -> list[Any]:
    return [c for c in element if _local(c.tag) == name]


def _number(element: Any, attribute: str, table: dict[str, float] | None = None,
            default_unit: str = "") -> float | None:
    """A numeric attribute, converted by its ``<attribute>Unit`` through ``table``."""
    text = element.get(attribute)
    if not text:
        return None
    value = float(text)
    if table is None:
        return value
    factor = table.get(element.get(f"{attribute}Unit") or default_unit)
    return None if factor is None else value * factor


def _parse(xml: str) -> Any:
    try:
        from lxml import etree
    except ImportError:
        return ET.fromstring(xml)
    return etree.fromstring(xml.encode("utf-8"), etree.XMLParser(huge_tree=True))


def summarize_ome(xml: str) -> OmeSummary:
    """Read the essentials of an OME-XML document.

    Raises
    ------
    Exception
        Whatever the XML parser raises on malformed text, or ValueError on a malformed
        number or date; callers report it as a metadata problem.
    """
    root = _parse(xml)
    objectives: dict[str, Objective] = {}
    for instrument in _children(root, "Instrument"):
        for objective in _children(instrument, "Objective"):
            immersion = objective.get("Immersion")
            objectives[objective.get("ID", "")] = Objective(
                name=(objective.get("Model") or "").strip() or None,
                magnification=_number(objective, "NominalMagnification"),
                numerical_aperture=_number(objective, "LensNA"),
                immersion=immersion if immersion not in (None, "", "Other") else None,
            )
    summary = OmeSummary(has_plate=bool(_children(root, "Plate")))
    for index, image in enumerate(_children(root, "Image")):
        pixels = _child(image, "Pixels")
        if pixels is None:
            continue
        channels = _children(pixels, "Channel")
        date = _child(image, "AcquisitionDate")
        settings = _child(image, "ObjectiveSettings")
        ref = settings.get("ID") if settings is not None else None
        objective = objectives.get(ref) if ref else None
        if objective is None and len(objectives) == 1:
            objective = next(iter(objectives.values()))
        summary.images.append(OmeImage(
            id=image.get("ID", f"Image:{index}"),
            name=image.get("Name", ""),
            pixel_sizes=PhysicalPixelSizes(*(
                _number(pixels, f"PhysicalSize{axis}", _TO_MICROMETRE, "µm") for axis in "ZYX")),
            channel_names=[ch.get("Name") or "" for ch in channels],
            wavelengths=[(_number(ch, "ExcitationWavelength", _TO_NANOMETRE, "nm"),
                          _number(ch, "EmissionWavelength", _TO_NANOMETRE, "nm"))
                         for ch in channels],
            acquisition_time=datetime.fromisoformat(date.text.strip())
            if date is not None and date.text else None,
            objective=objective,
            time_increment=_number(pixels, "TimeIncrement", _TO_SECOND, "s"),
        ))
    return summary
