"""The build context: `.dockerignore` (or `<Dockerfile>.dockerignore`) rules, the selection
of COPY/ADD sources (globs, `--exclude`), and content digests of what is selected.

A file's digest covers its mode, owner, xattrs and bytes (or link target), never its mtime.
Digests are kept in a stat cache (inode, size, mtime and ctime in ns) under the store, so an
unchanged file is not read again by the next build of the same context."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any


def _pattern_re(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher: filepath.Match syntax plus `**` (any number of directories)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body[:1] == "^" or body[:1] == "!":
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("(?s)" + "".join(out))


def clean(pattern: str) -> str:
    p = os.path.normpath(pattern.strip().lstrip("/")) if pattern.strip().lstrip("/") else "."
    return p


class Matcher:
    """Ordered include/exclude patterns; the last one that matches a path or one of its
    parent directories decides."""

    def __init__(self, patterns: list[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in patterns:
            neg = raw.startswith("!")
            p = clean(raw[1:] if neg else raw)
            if p == ".":
                continue
            self.rules.append((neg, _pattern_re(p)))
        self.has_exceptions = any(neg for neg, _ in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def matches(self, rel: str) -> bool:
        if not self.rules:
            return False
        parts = rel.split("/")
        prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
        hit = False
        for neg, rx in self.rules:
            if any(rx.fullmatch(p) for p in prefixes):
                hit = not neg
        return hit


def read_ignore_file(path: Path) -> list[str] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None
    out = []
    for line in text.split("\n"):
        if line.startswith("#"):
            continue
        line = line.strip()
        if line:
            out.append(line)
    return out


class Context:
    """A context directory and its ignore rules; digests are thread-safe."""

    def __init__(self, root: Path, dockerfile: Path, cache_file: Path | None) -> None:
        self.root = root
        patterns = read_ignore_file(dockerfile.parent / f"{dockerfile.name}.dockerignore")
        if patterns is None:
            patterns = read_ignore_file(root / ".dockerignore") or []
        self.ignore = Matcher(patterns)
        self.cache_file = cache_file
        self._lock = threading.Lock()
        self._stat: dict[str, list[Any]] = {}
        self._dirty = False
        if cache_file is not None:
            try:
                self._stat = json.loads(cache_file.read_bytes())
            except (OSError, ValueError):
                self._stat = {}
        self.files_read = 0  # how many files this build read for their digest (tests)

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def ignored(self, path: Path) -> bool:
        return bool(self.ignore) and self.ignore.matches(self.rel(path))

    def walk(
        self, top: Path, exclude: Matcher | None = None, base: Path | None = None
    ) -> list[Path]:
        """`top` and everything under it that is neither ignored nor excluded (`exclude`
        matches paths relative to `base`), sorted: directories before their contents. An
        excluded directory is still searched when an exception (`!dir/keep`) may bring a file
        under it back; the directories on the way to such a file are kept."""
        base = base or self.root

        def dropped(p: Path) -> bool:
            if self.ignored(p):
                return True
            return (
                exclude is not None and bool(exclude) and exclude.matches(str(p.relative_to(base)))
            )

        prune = not self.ignore.has_exceptions and not (exclude and exclude.has_exceptions)
        kept: set[Path] = set()
        if top.is_dir() and not top.is_symlink():
            for dirpath, dirnames, filenames in os.walk(top):
                d = Path(dirpath)
                if prune:
                    dirnames[:] = [n for n in dirnames if not dropped(d / n)]
                for name in (*dirnames, *filenames):
                    p = d / name
                    if p in kept or dropped(p):
                        continue
                    kept.add(p)
                    for parent in p.parents:
                        if parent == top or parent in kept:
                            break
                        kept.add(parent)
        return [top, *sorted(kept, key=lambda p: p.parts)]

    def file_digest(self, path: Path) -> str:
        """sha256 of the entry's mode, owner, xattrs and bytes or link target."""
        st = path.lstat()
        rel = self.rel(path) if path.is_relative_to(self.root) else str(path)
        sig = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]
        with self._lock:
            hit = self._stat.get(rel)
        if hit is not None and hit[:5] == sig:
            return str(hit[5])
        h = hashlib.sha256(f"{st.st_mode:o} {st.st_uid} {st.st_gid}\0".encode())
        try:
            names = sorted(os.listxattr(path, follow_symlinks=False))
        except OSError:
            names = []
        for name in names:
            if name.startswith("security.") and name != "security.capability":
                continue
            if name.startswith("system."):
                continue
            with contextlib.suppress(OSError):
                h.update(name.encode() + b"=" + os.getxattr(path, name, follow_symlinks=False))
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            self.files_read += 1
        digest = h.hexdigest()
        with self._lock:
            self._stat[rel] = [*sig, digest]
            self._dirty = True
        return digest

    def save(self) -> None:
        if self.cache_file is None or not self._dirty:
            return
        from pyrun.store.fsutil import atomic_write_json

        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            # Only entries that still exist: a context that shrinks does not keep old names.
            data = {k: v for k, v in self._stat.items() if os.path.lexists(self.root / k)}
        atomic_write_json(self.cache_file, data, durable=False, pretty=False)
