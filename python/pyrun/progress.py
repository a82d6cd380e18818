"""Per-layer progress bars for pull and push on a terminal, Docker-style:

    3cf1cd3a208b: Downloading [=========>                ]  12.3MB/31.4MB
    26e8a69a6853: Pull complete

A renderer thread redraws the rows ten times a second from counters the transfers keep
(`transferred` on each blob: one attribute store per 1 MiB read, nothing more on the streaming
path). Imported only by `pull`/`push` on a terminal: not on the CLI's other paths."""

from __future__ import annotations

import threading
from typing import Any, TextIO

BAR = 30


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n:.1f}GB"  # pragma: no cover


class _Row:
    def __init__(self, key: str, total: int, blob: Any) -> None:
        self.key = key
        self.total = total
        self.blob = blob
        self.state = "active"
        self.text = ""


class Bars:
    """The `progress` callback of a copy, drawing bars on `out` (a terminal). `verb` is
    "pull" or "push": it picks Docker's words for each state."""

    def __init__(self, out: TextIO, verb: str = "pull") -> None:
        self.out = out
        self.pull = verb == "pull"
        self.rows: dict[str, _Row] = {}
        self.drawn = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self.thread.start()

    # -- what the copy reports ---------------------------------------------------------------
    def begin(self, key: str, total: int, blob: Any) -> None:
        """A layer's transfer starts; its bytes so far are `blob.transferred`."""
        with self.lock:
            self.rows[key] = _Row(key, total, blob)
        self.draw()

    def __call__(self, line: str) -> None:
        """The copy's plain events: `KEY: already exists`, `KEY: copied N bytes`, `KEY: mounted
        from REPO`; anything else is a row of its own."""
        key, _, what = line.partition(": ")
        with self.lock:
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = _Row(key, 0, None)
            if what == "already exists":
                row.state, row.text = (
                    "done",
                    "Already exists" if self.pull else "Layer already exists",
                )
            elif what.startswith("copied"):
                row.state, row.text = "done", "Pull complete" if self.pull else "Pushed"
            elif what.startswith("mounted from"):
                row.state, row.text = "done", what[0].upper() + what[1:]
            else:
                row.state, row.text = "done", what
        self.draw()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.draw()

    # -- drawing -----------------------------------------------------------------------------
    def _line(self, row: _Row) -> str:
        if row.state == "done":
            return f"{row.key}: {row.text}"
        got = int(getattr(row.blob, "transferred", 0) or 0)
        word = "Downloading" if self.pull else "Pushing"
        if not row.total:
            return f"{row.key}: {word} {_size(got)}"
        filled = min(BAR, got * BAR // row.total)
        bar = "=" * filled + (">" if filled < BAR else "") + " " * max(0, BAR - filled - 1)
        return f"{row.key}: {word} [{bar}] {_size(got):>8}/{_size(row.total)}"

    def draw(self) -> None:
        with self.lock:
            lines = [self._line(r) for r in self.rows.values()]
            up = f"\x1b[{self.drawn}A" if self.drawn else ""
            self.drawn = len(lines)
            text = up + "".join(f"\r\x1b[2K{ln}\n" for ln in lines)
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError):
                pass

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            with self.lock:
                active = any(r.state == "active" for r in self.rows.values())
            if active:
                self.draw()
