"""Reading container logs: the json-file records (`{"log","stream","time"}` per line) the
monitor writes, with Docker's `logs` options (--tail, --since, --until, -t, -f)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pyrun.errors import PyrunError

if TYPE_CHECKING:
    from pyrun.runtime.containers import Container


class LogOptionError(PyrunError):
    exit_code = 1


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_time(text: str, now: float | None = None) -> float:
    """Docker's --since/--until: an RFC 3339 time, a Unix timestamp (with fraction), or a Go
    duration back from now ("10m", "1h30m", "2.5s"); seconds since the epoch."""
    import datetime as dt
    import re

    raw = text.strip()
    now = time.time() if now is None else now
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    m = re.fullmatch(r"((\d+(\.\d*)?)(ns|us|µs|ms|s|m|h))+", raw)
    if m:
        total = sum(
            float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d*)?)(ns|us|µs|ms|s|m|h)", raw)
        )
        return now - total
    try:
        t = dt.datetime.fromisoformat(_trim_fraction(raw.replace("Z", "+00:00")))
    except ValueError:
        raise LogOptionError(
            f"invalid time {text!r}: expected RFC 3339, a Unix timestamp or a duration like 10m"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _trim_fraction(text: str) -> str:
    """Python's fromisoformat takes at most 6 fraction digits; Docker writes 9."""
    import re

    return re.sub(r"(\.\d{6})\d+", r"\1", text)


def record_time(rfc3339: str) -> float:
    try:
        return parse_time(rfc3339)
    except LogOptionError:
        return 0.0


def parse_tail(tail: str | int | None) -> int | None:
    if tail is None or tail == "all":
        return None
    try:
        n = int(tail)
    except ValueError:
        raise LogOptionError(f"invalid --tail {tail!r}: expected a number or 'all'") from None
    return None if n < 0 else n


def _records(data: bytes) -> Iterator[tuple[str, bytes, str]]:
    for line in data.splitlines():
        try:
            rec = json.loads(line)
            yield (
                str(rec.get("stream", "stdout")),
                str(rec.get("log", "")).encode(),
                str(rec.get("time", "")),
            )
        except (ValueError, AttributeError):
            continue  # a torn last line (the monitor is writing it right now)


def follow_logs(
    c: Container,
    *,
    stdout: bool = True,
    stderr: bool = True,
    timestamps: bool = False,
    tail: str | int | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    follow: bool = False,
    until_run_ends: int | None = None,
) -> Iterator[tuple[str, bytes]]:
    """(stream, bytes) pieces of the container's log; with `follow`, until the container has
    stopped and everything it wrote was read, or with `until_run_ends` = N until its run
    number N (the restart count) has ended (an attached `run` or `start -a`)."""
    n_tail = parse_tail(tail)
    t_since = parse_time(since) if isinstance(since, str) else since
    t_until = parse_time(until) if isinstance(until, str) else until
    wanted = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}

    def keep(stream: str, stamp: str) -> bool:
        if stream not in wanted:
            return False
        if t_since is not None or t_until is not None:
            t = record_time(stamp)
            if t_since is not None and t < t_since:
                return False
            if t_until is not None and t > t_until:
                return False
        return True

    def render(stream: str, text: bytes, stamp: str) -> tuple[str, bytes]:
        return stream, (stamp.encode() + b" " + text) if timestamps else text

    try:
        f = open(c.log_path, "rb")  # noqa: SIM115 (kept open while following)
    except FileNotFoundError:
        if not follow:
            return
        f = None
    try:
        pos = 0
        if f is not None:
            data = f.read()
            cut = data.rfind(b"\n") + 1
            pos = cut
            recs = [r for r in _records(data[:cut]) if keep(r[0], r[2])]
            if n_tail is not None:
                recs = recs[-n_tail:] if n_tail else []
            for stream, text, stamp in recs:
                yield render(stream, text, stamp)
        if not follow:
            return
        idle = 0.01
        while True:
            if f is None:
                try:
                    f = open(c.log_path, "rb")  # noqa: SIM115
                except FileNotFoundError:
                    f = None
            chunk = b""
            if f is not None:
                f.seek(pos)
                chunk = f.read()
                cut = chunk.rfind(b"\n") + 1
                chunk = chunk[:cut]
                pos += cut
            if chunk:
                idle = 0.01
                for stream, text, stamp in _records(chunk):
                    if keep(stream, stamp):
                        yield render(stream, text, stamp)
                continue
            c.reload()
            try:
                if until_run_ends is None:
                    active = c.status in ("running", "restarting") or c.runner_alive()
                else:
                    st = c.state
                    active = st.get("status") == "running" and (
                        st.get("restart_count", 0) == until_run_ends
                    )
            except PyrunError:
                active = False  # removed (--rm): the open file still has the rest
            if not active:
                # One last read: the monitor flushed the tail before it wrote the exit.
                if f is not None:
                    f.seek(pos)
                    rest = f.read()
                    for stream, text, stamp in _records(rest):
                        if keep(stream, stamp):
                            yield render(stream, text, stamp)
                return
            time.sleep(idle)
            idle = min(idle * 2, 0.1)
    finally:
        if f is not None:
            f.close()


def write_to_fds(pieces: Iterator[tuple[str, bytes]], out_fd: int = 1, err_fd: int = 2) -> None:
    for stream, data in pieces:
        fd = err_fd if stream == "stderr" else out_fd
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
