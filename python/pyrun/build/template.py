"""Build templates: a `pyrun build` line whose every step came from the build cache, kept for
the `pyrun` executable to answer without starting Python (rust/fastrun.rs, BuildTemplate).

Such a build changes nothing: it finds every step in the cache, the image is already in the
store and its tags already point at it, so all it does is print. As long as nothing it read
changed (the whole context tree, the Dockerfile and its ignore files, the store's tags, the
cache records and their layers and blobs, pyrun's own sources) and the line, directory,
environment and user are the same (the template's key, as for run templates), the same line
would build the same image from the cache again and print the same thing. The template keeps
what it printed and the stat identity of what it read; the `pyrun` executable checks every
identity and prints, or hands the line to Python.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from pyrun.runtime.template import FORMAT, identity, sources
from pyrun.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, TextIO

    from pyrun.build.builder import Builder

# pyrun's modules that decide a build's outcome: editing one retires every build template.
_SOURCES = (
    "pyrun.cli.build",
    "pyrun.build.builder",
    "pyrun.build.context",
    "pyrun.build.parser",
    "pyrun.build.checks",
    "pyrun.build.progress",
    "pyrun.build.template",
    "pyrun.store",
)


def expressible(args: argparse.Namespace) -> bool:
    """Whether a template could answer this line: context and Dockerfile from files, no
    exports, no pulls, the cache used."""
    return not (
        args.context == "-" or args.file == "-" or args.output or args.pull or args.no_cache
    )


class Tee(io.TextIOBase):
    """A text stream that also keeps what was written to it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.parts: list[str] = []

    def write(self, s: str) -> int:
        self.parts.append(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def text(self) -> str:
        return "".join(self.parts)


def tree(context: Path) -> list[list[Any]] | None:
    """Every entry under `context` (symlinks not followed): [relative path, dev, ino, size,
    mtime_ns, mode], sorted by path as fastrun::tree lists it; None for a name that is not
    UTF-8."""
    out: list[list[Any]] = []

    def walk(rel: str) -> bool:
        with os.scandir(context / rel if rel else context) as entries:
            for e in entries:
                try:
                    e.name.encode("utf-8")
                except UnicodeEncodeError:
                    return False
                path = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                out.append([path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode])
                if e.is_dir(follow_symlinks=False) and not walk(path):
                    return False
        return True

    if not walk(""):
        return None
    out.sort(key=lambda entry: entry[0].encode())
    return out


def capture(
    store: Store,
    builder: Builder,
    args: argparse.Namespace,
    stdout: str,
    stderr: str,
    image_id: str,
) -> dict[str, Any] | None:
    """The template of a build that just went through, or None when it cannot be replayed (a
    step ran, a URL was fetched, a name is not UTF-8)."""
    if builder.steps_run or builder.fetched:
        return None
    snapshot = tree(builder.context_dir)
    if snapshot is None:
        return None
    dockerfile = builder.dockerfile.resolve()
    deps: list[Path | str] = [
        dockerfile,
        dockerfile.parent / f"{dockerfile.name}.dockerignore",
        store.root / "refs.json",
        *builder.cache_records,
        *(store.layer_path(d) / "layer.json" for d in builder.cache_layers),
        *(store.blob_path(d) for d in builder.cache_blobs),
        *sources(_SOURCES),
    ]
    return {
        "format": FORMAT,
        "deps": [identity(str(path)) for path in deps],
        "context": str(builder.context_dir),
        "tree": snapshot,
        # --progress auto: a terminal would have got the live display.
        "not_tty": [1] if args.progress == "auto" and not args.quiet else [],
        "stdout": stdout,
        "stderr": stderr,
        "iidfile": [args.iidfile, image_id] if args.iidfile else None,
    }
