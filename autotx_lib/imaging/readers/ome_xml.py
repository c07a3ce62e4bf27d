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
    #: ``(part, why)`` for values that could not be read (they are None above).
    problems: list[tuple[str, str]] = field(default_factory=list)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(element: Any, name: str) -> Any:
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: Any, name: str) -> list[Any]:
    return [c for c in element if _local(c.tag) == name]


def _number(element: Any, attribute: str, table: dict[str, float] | None = None,
            default_unit: str = "", problems: list | None = None) -> float | None:
    """A numeric attribute, converted by its ``<attribute>Unit`` through ``table``."""
    text = element.get(attribute)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        if problems is not None:
            problems.append((f"OME {attribute}", f"{text!r} is not a number"))
        return None
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

    A malformed number or date becomes None and is listed in ``problems``.

    Raises
    ------
    Exception
        Whatever the XML parser raises on malformed text; callers report it as a metadata
        problem.
    """
    root = _parse(xml)
    summary = OmeSummary()
    problems = summary.problems
    objectives: dict[str, Objective] = {}
    for instrument in _children(root, "Instrument"):
        for objective in _children(instrument, "Objective"):
            immersion = objective.get("Immersion")
            objectives[objective.get("ID", "")] = Objective(
                name=(objective.get("Model") or "").strip() or None,
                magnification=_number(objective, "NominalMagnification", problems=problems),
                numerical_aperture=_number(objective, "LensNA", problems=problems),
                immersion=immersion if immersion not in (None, "", "Other") else None,
            )
    summary.has_plate = bool(_children(root, "Plate"))
    for index, image in enumerate(_children(root, "Image")):
        pixels = _child(image, "Pixels")
        if pixels is None:
            continue
        channels = _children(pixels, "Channel")
        date = _child(image, "AcquisitionDate")
        when = None
        if date is not None and date.text:
            try:
                when = datetime.fromisoformat(date.text.strip())
            except ValueError:
                problems.append(("OME AcquisitionDate", f"{date.text.strip()!r} is no date"))
        settings = _child(image, "ObjectiveSettings")
        ref = settings.get("ID") if settings is not None else None
        objective = objectives.get(ref) if ref else None
        if objective is None and len(objectives) == 1:
            objective = next(iter(objectives.values()))
        summary.images.append(OmeImage(
            id=image.get("ID", f"Image:{index}"),
            name=image.get("Name", ""),
            pixel_sizes=PhysicalPixelSizes(*(
                _number(pixels, f"PhysicalSize{axis}", _TO_MICROMETRE, "µm", problems)
                for axis in "ZYX")),
            channel_names=[ch.get("Name") or "" for ch in channels],
            wavelengths=[(_number(ch, "ExcitationWavelength", _TO_NANOMETRE, "nm", problems),
                          _number(ch, "EmissionWavelength", _TO_NANOMETRE, "nm", problems))
                         for ch in channels],
            acquisition_time=when,
            objective=objective,
            time_increment=_number(pixels, "TimeIncrement", _TO_SECOND, "s", problems),
        ))
    return summary
