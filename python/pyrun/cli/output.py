"""Formatting helpers shared by the CLI commands (Docker's human sizes and times, tables)."""

from __future__ import annotations

import json
import sys
from typing import Any


def human_size(n: float) -> str:
    """Docker's decimal units: 4.26MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}B"


def human_ago(rfc3339: str) -> str:
    if not rfc3339:
        return "N/A"
    import datetime as _dt  # lazily: only listings print ages

    try:
        t = _dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return rfc3339
    secs = (_dt.datetime.now(_dt.UTC) - t).total_seconds()
    for limit, div, unit in (
        (60, 1, "second"),
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (86400 * 14, 86400, "day"),
        (86400 * 60, 86400 * 7, "week"),
        (86400 * 730, 86400 * 30, "month"),
        (float("inf"), 86400 * 365, "year"),
    ):
        if secs < limit:
            n = max(int(secs // div), 1)
            if unit == "second" and secs < 1:
                return "Less than a second ago"
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return rfc3339


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        line = "   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=4) + "\n")
