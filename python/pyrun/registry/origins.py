"""Which registry repositories are known to hold a blob (pulled from there, or pushed there):
the candidates for a cross-repository mount on push. Kept in the store root as
`registry-origins.json` ({digest: ["host/repo", ...]}, newest last, a few per blob), replaced
atomically under a lock, so concurrent pulls and pushes do not lose each other's entries."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FILE = "registry-origins.json"
PER_BLOB = 4
MAX_BLOBS = 20000


def _load(path: Path) -> dict[str, list[str]]:
    try:
        with open(path, "rb") as f:
            data: Any = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(x) for x in v] for k, v in data.items() if isinstance(v, list)}


def lookup(root: Path, digest: str, host: str) -> list[str]:
    """Repositories of `host` known to hold `digest`, newest first."""
    prefix = f"{host}/"
    return [
        loc[len(prefix) :]
        for loc in reversed(_load(root / FILE).get(digest, []))
        if loc.startswith(prefix)
    ]


def record(root: Path, host: str, repo: str, digests: Iterable[str]) -> None:
    """Note that `host/repo` holds these blobs (best effort: a failure here costs a mount
    later, never the pull or push)."""
    import fcntl

    todo = list(digests)
    if not todo or not root.is_dir():
        return
    path = root / FILE
    loc = f"{host}/{repo}"
    with contextlib.suppress(OSError), open(root / f".{FILE}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _load(path)
        for d in todo:
            entry = [x for x in data.pop(d, []) if x != loc] + [loc]
            data[d] = entry[-PER_BLOB:]  # re-inserted: the dict keeps recent blobs last
        while len(data) > MAX_BLOBS:
            del data[next(iter(data))]
        tmp = path.with_name(f"{FILE}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
