"""Build progress: BuildKit's plain lines (`#N [stage i/n] INSTR`, the step's output with its
time offset, `#N CACHED` or `#N DONE 0.3s`), a live view on a terminal (steps running now at
the bottom with their clocks and last output line, finished steps above them), or nothing
(quiet). Every step keeps its last output lines for the error report of a failing RUN."""

from __future__ import annotations

import collections
import threading
import time
from typing import TextIO

TAIL = 10  # output lines a failing step shows


class Step:
    def __init__(self, progress: BuildProgress, number: int, title: str) -> None:
        self.progress = progress
        self.number = number
        self.title = title
        self.started = time.monotonic()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL)
        self.state = "running"
        self.elapsed = 0.0
        self._partial = b""

    def output(self, data: bytes) -> None:
        """Bytes the step wrote; complete lines are shown (plain) and kept for errors."""
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            self.line(raw.decode(errors="replace").rstrip("\r"))

    def flush(self) -> None:
        if self._partial:
            self.line(self._partial.decode(errors="replace"))
            self._partial = b""

    def line(self, text: str) -> None:
        self.tail.append(text)
        self.progress._line(self, text)

    def cached(self) -> None:
        self.state = "cached"
        self.progress._end(self)

    def done(self) -> None:
        self.flush()
        self.elapsed = time.monotonic() - self.started
        self.state = "done"
        self.progress._end(self)

    def failed(self) -> None:
        self.flush()
        self.elapsed = time.monotonic() - self.started
        self.state = "error"
        self.progress._end(self)


class BuildProgress:
    """mode: "plain", "tty" (live view) or "quiet"."""

    def __init__(self, stream: TextIO, mode: str) -> None:
        self.stream = stream
        self.mode = mode
        self.lock = threading.RLock()
        self.count = 0
        self.active: list[Step] = []
        self.started = time.monotonic()
        self.lines: list[str] = []  # every plain line (the Python API's build log)
        self._drawn = 0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if mode == "tty":
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def step(self, title: str) -> Step:
        with self.lock:
            self.count += 1
            s = Step(self, self.count, title)
            self.active.append(s)
            self._emit(f"#{s.number} {title}")
            return s

    def note(self, text: str) -> None:
        with self.lock:
            self._emit(text)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            with self.lock:
                self._redraw(final=True)

    # --- internals -------------------------------------------------------------------------
    def _emit(self, text: str, *, live: str | None = None) -> None:
        self.lines.append(text)
        if self.mode == "plain":
            self.stream.write(text + "\n")
            self.stream.flush()
        elif self.mode == "tty" and live is not None:
            self._clear()
            self.stream.write(live + "\n")
            self._redraw()

    def _line(self, step: Step, text: str) -> None:
        with self.lock:
            at = time.monotonic() - step.started
            self._emit(f"#{step.number} {at:.3f} {text}")

    def _end(self, step: Step) -> None:
        with self.lock:
            if step in self.active:
                self.active.remove(step)
            if step.state == "cached":
                text, live = f"#{step.number} CACHED", f" => CACHED {step.title}"
            elif step.state == "done":
                text = f"#{step.number} DONE {step.elapsed:.1f}s"
                live = f" => {step.title:<60.60} {step.elapsed:5.1f}s"
            else:
                text = f"#{step.number} ERROR {step.elapsed:.1f}s"
                live = f" => ERROR {step.title:<54.54} {step.elapsed:5.1f}s"
                if self.mode == "tty":
                    live += "".join(f"\n    {t}" for t in step.tail)
            self._emit(text, live=live)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self, final: bool = False) -> None:
        self._clear()
        if final:
            self.stream.write(f" Finished in {time.monotonic() - self.started:.1f}s\n")
            self.stream.flush()
            return
        now = time.monotonic()
        rows = [f"[+] Building {now - self.started:.1f}s ({self.count} steps)"]
        for s in self.active:
            rows.append(f" => {s.title:<60.60} {now - s.started:5.1f}s")
            if s.tail:
                rows.append(f"    {s.tail[-1][:76]}")
        self.stream.write("\n".join(rows) + "\n")
        self.stream.flush()
        self._drawn = len(rows)

    def _tick(self) -> None:
        while not self._stop.wait(0.1):
            with self.lock:
                self._redraw()
