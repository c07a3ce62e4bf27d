"""Bandwidth caps: a rate, ``off``, or a timetable like rclone's ``--bwlimit``.

A value is one of:

* a rate: ``20`` or ``20M`` (MB/s), ``512k`` (kB/s), ``1G`` (GB/s); decimal units;
* ``off``: no cap;
* a timetable: ``"Mon-Fri 08:00,10M 19:00,off"`` - times with the rate from then on,
  optionally after a day or day range that applies to the times following it (no day:
  every day). The rate in force is the one of the latest entry at or before now, going
  back across midnight and the week (so ``"08:00,10M 19:00,off"`` caps 08:00-19:00 daily).

Examples
--------
>>> parse_rate("512k")
0.512
>>> table = Timetable.parse("Mon-Fri 08:00,10M 19:00,off")
>>> import datetime as dt
>>> table.rate_at(dt.datetime(2026, 12, 1, 9, 30))   # a Tuesday morning
10.0
>>> table.rate_at(dt.datetime(2026, 12, 5, 9, 30)) is None   # Saturday: off since Fri 19:00
True
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_UNITS = {"": 1.0, "m": 1.0, "k": 1e-3, "g": 1e3}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(?:b|b/s|/s)?$", re.IGNORECASE)
_ENTRY = re.compile(r"^(\d{1,2}):(\d{2}),(.+)$")


def parse_rate(text: str) -> float | None:
    """A rate in MB/s from ``20``, ``20M``, ``512k``, ``1G``; None for ``off``.

    Raises
    ------
    ValueError
        The text is not a rate.
    """
    value = text.strip()
    if value.lower() in {"off", "none", "unlimited"}:
        return None
    match = _RATE.match(value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a bandwidth: use e.g. 20M (MB/s), 512k (kB/s) or "
                         "off")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def _days(text: str) -> list[int] | None:
    """``Mon``, ``Mon-Fri``, ``Sat-Sun`` -> weekday numbers; None if it is not a day spec."""
    parts = text.lower().split("-")
    if not all(p[:3] in DAYS and len(p) >= 3 for p in parts) or len(parts) > 2:
        return None
    first, last = DAYS.index(parts[0][:3]), DAYS.index(parts[-1][:3])
    return [(first + i) % 7 for i in range((last - first) % 7 + 1)]


@dataclass(frozen=True)
class Timetable:
    """Rates from given times of the week; see the module docstring for the syntax."""

    text: str
    entries: tuple[tuple[int, float | None], ...]  # (minute of the week, MB/s or None)

    @classmethod
    def parse(cls, text: str) -> Timetable:
        """Parse a timetable.

        Raises
        ------
        ValueError
            With the token that is wrong and an example of the syntax.
        """
        days = list(range(7))
        entries: dict[int, float | None] = {}
        for token in text.split():
            day_spec = _days(token)
            if day_spec is not None:
                days = day_spec
                continue
            match = _ENTRY.match(token)
            if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
                raise ValueError(f"{token!r} in the bandwidth timetable is neither a day "
                                 "(Mon, Mon-Fri) nor HH:MM,RATE; example: "
                                 "'Mon-Fri 08:00,10M 19:00,off'")
            minute = int(match.group(1)) * 60 + int(match.group(2))
            rate = parse_rate(match.group(3))
            for day in days:
                entries[day * 1440 + minute] = rate
        if not entries:
            raise ValueError(f"{text!r} has no HH:MM,RATE entry; example: "
                             "'Mon-Fri 08:00,10M 19:00,off'")
        return cls(text, tuple(sorted(entries.items())))

    def rate_at(self, when: dt.datetime) -> float | None:
        """The cap in MB/s in force at local time ``when`` (None: no cap)."""
        minute = when.weekday() * 1440 + when.hour * 60 + when.minute
        current = self.entries[-1][1]  # wraps around from the end of the week
        for start, rate in self.entries:
            if start > minute:
                break
            current = rate
        return current


def resolve(spec: float | str | None, when: dt.datetime | None = None) -> float | None:
    """The cap in MB/s now, from a number, a rate text, ``off`` or a timetable (None: no cap).

    Raises
    ------
    ValueError
        ``spec`` is text that is neither a rate nor a timetable.
    """
    if spec is None or isinstance(spec, int | float):
        return float(spec) if spec else None
    if "," in spec:
        return Timetable.parse(spec).rate_at(when or dt.datetime.now())
    return parse_rate(spec)


def check(spec: str) -> str:
    """Validate a bandwidth value (rate, ``off`` or timetable); returns it stripped."""
    resolve(spec.strip())
    return spec.strip()


__all__ = ["Timetable", "check", "parse_rate", "resolve"]
