"""Run templates: what a foreground `pyrun run` line decided, written for the `pyrun`
executable to replay without starting Python (rust/fastrun.rs explains why and replays them).

The Python CLI writes one after it ran a line whose outcome a template can express: no
volumes, no bridge, no name, no stdin, no restart policy, nothing read from files the template
cannot watch. The template holds the files of the container's directory and of its runtime
directory (Container.run_dir) with the container's id, short id, name and creation time as
placeholders, the overlay's layers and the stat identity of every file the decision read. Its
key (fastrun::key, computed by the `pyrun` executable, which passes it in cli/__init__.py's
LAUNCHER_ENV) hashes the rest: the command line, the working directory, the whole environment
and the user.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pyrun.store import ImageRecord, Store
from pyrun.store.fsutil import atomic_write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pyrun.runtime.containers import Container

FORMAT = 2  # fastrun::FORMAT
P_ID, P_SHORT, P_NAME, P_CREATED = "\0ID\0", "\0SHORT\0", "\0NAME\0", "\0CREATED\0"
# Templates are written only for lines the `pyrun` executable handed to the Python CLI
# (cli/__init__.py's LAUNCHER_ENV): a line run as `pyrun-py` or `python -m pyrun.cli` is never
# replayed natively.
# At most this many templates per store (the oldest go first).
KEEP = 256
# `--security-opt` values that read no file (a seccomp profile file would be one more input).
_SAFE_SECURITY_OPTS = {
    "seccomp=unconfined",
    "seccomp:unconfined",
    "no-new-privileges",
    "no-new-privileges:true",
    "no-new-privileges=true",
    "apparmor=unconfined",
    "label=disable",
}


# fastrun::UNKEYED_ENV: variables shells and benchmark tools change from one command to the
# next and pyrun never reads. The key (which the `pyrun` executable computes, fastrun::key)
# leaves them out, so a line that passes one into the container (`-e OLDPWD`) gets none.
UNKEYED_ENV = ("_", "OLDPWD", "PWD", "HYPERFINE_RANDOMIZED_ENVIRONMENT_OFFSET")


def expressible(args: Any) -> bool:
    """Whether a template can replay this `run` line (cli/options.py's fields)."""
    return (
        not getattr(args, "detach", False)
        and not (args.name or args.env_file)
        and args.pull == "missing"
        and not any(e in UNKEYED_ENV for e in args.env if "=" not in e)
        and expressible_options(
            restart=args.restart,
            interactive=args.interactive,
            tty=args.tty,
            volumes=args.volume + args.mount,
            publish=bool(args.publish or args.publish_all),
            network=args.network,
            extra_hosts=args.add_host,
            security_opt=args.security_opt,
        )
    )


def expressible_options(
    *,
    restart: str | None,
    interactive: bool,
    tty: bool,
    volumes: list[str],
    publish: bool,
    network: str | None,
    extra_hosts: list[str],
    security_opt: list[str],
) -> bool:
    """What a template cannot replay: a restart policy, stdin or a terminal, volumes and
    mounts (volumes are made, host paths may appear), published ports and bridges (leased per
    run), the host gateway, security options that read a file."""
    return (
        (restart or "no") == "no"
        and not (interactive or tty or volumes or publish)
        and network in ("none", "host")
        and not any(h.endswith((":host-gateway", "=host-gateway")) for h in extra_hosts)
        and all(o in _SAFE_SECURITY_OPTS for o in security_opt)
    )


class Sink:
    """Where the template of a run goes once the run went through: `inputs` are the texts the
    run was asked with (a placeholder's value must not come from them), `keep` takes the
    template."""

    def __init__(self, inputs: list[str], keep: Callable[[dict[str, Any]], None]) -> None:
        self.inputs = inputs
        self.keep = keep


def identity(path: str) -> list[Any]:
    """[path, dev, ino, size, mtime_ns] of a file (following symlinks); [path, 0, 0, 0, 0]
    when it is missing, which the replay reads as "must still be missing"."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, 0, 0, 0, 0]
    return [path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


# pyrun's modules that shape a run's records: editing one retires every run template.
_SOURCES = (
    "pyrun.cli.options",
    "pyrun.cli.containers",
    "pyrun.client",
    "pyrun.runtime.containers",
    "pyrun.runtime.spec",
    "pyrun.runtime.etcfiles",
    "pyrun.runtime.users",
    "pyrun.runtime.seccomp",
    "pyrun.runtime.template",
    "pyrun.store",
)


def sources(names: tuple[str, ...]) -> list[str]:
    """The files of those of the named modules that are loaded."""
    return [str(sys.modules[n].__file__) for n in names if n in sys.modules]


class _Unexpressible(Exception):
    pass


def capture(
    store: Store,
    c: Container,
    image: ImageRecord,
    lowers: list[str],
    inputs: list[str],
) -> dict[str, Any] | None:
    """The template of container `c`, whose directory is ready to run (bundle written, root
    mounted), or None where the container holds something a template cannot replay."""
    from pyrun.runtime.containers import _ADJECTIVES, _NAMES, LOG_NAME

    record = c.record
    if record.get("anonymous_volumes"):
        return None
    values = {
        c.id: P_ID,
        c.id[:12]: P_SHORT,
        str(record["name"]): P_NAME,
        str(record["created"]): P_CREATED,
    }
    # A placeholder's value must come from the placeholder alone: not from the line, the
    # environment or the image (a name that is also an environment value, say).
    given = "\0".join([*inputs, *os.environ.values(), json.dumps(image.config)])
    if any(v in given for v in list(values)[1:]):
        return None

    def templated(text: str) -> str:
        for value, placeholder in values.items():  # the id before its prefix, the short id
            text = text.replace(value, placeholder)
        return text

    last: list[Any] | None = None

    def walk(top: Path, rel: str, dirs: list[str], files: list[list[Any]]) -> None:
        nonlocal last
        base = top / rel if rel else top
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            path = f"{rel}/{entry.name}" if rel else entry.name
            if path in ("state.json", "pid"):
                continue
            if entry.is_dir(follow_symlinks=False):
                dirs.append(path)
                if path not in ("rootfs", "upper", "work"):  # made by the overlay and runtime
                    walk(top, path, dirs, files)
            elif entry.is_file(follow_symlinks=False):
                try:
                    text = Path(entry.path).read_text()
                except (OSError, UnicodeDecodeError):
                    raise _Unexpressible from None
                item = [path, entry.stat().st_mode & 0o7777, templated(text)]
                if path == "container.json":
                    last = item
                else:
                    files.append(item)
            else:
                raise _Unexpressible

    dirs: list[str] = []
    files: list[list[Any]] = []
    run_dirs: list[str] = []
    run_files: list[list[Any]] = []
    try:
        walk(c.dir, "", dirs, files)
        walk(c.run_dir, "", run_dirs, run_files)
    except _Unexpressible:
        return None
    if last is None:
        return None
    files.append(last)  # container.json last: the container is listed once it is whole
    deps = [
        store.root / "refs.json",
        "/etc/resolv.conf",
        "/etc/hosts",
        *lowers,
        *sources(_SOURCES),
    ]
    auto_remove = bool(record.get("auto_remove"))
    return {
        "format": FORMAT,
        "deps": [identity(str(p)) for p in deps],
        "dirs": dirs,
        "files": files,
        "run_dir": templated(str(c.run_dir)),
        "run_dirs": run_dirs,
        "run_files": run_files,
        "lowers": [templated(lower) for lower in lowers],
        "links_dir": str(store.root / "layers" / "l"),
        "volatile": auto_remove,
        "log": None if auto_remove else LOG_NAME,
        "remove": auto_remove,
        "adjectives": _ADJECTIVES,
        "surnames": _NAMES,
    }


def save(store: Store, kind: str, template_key: str, template: dict[str, Any]) -> None:
    """Write a template ("run" or "build") atomically, keeping at most KEEP of a kind."""
    directory = store.root / "cache" / kind
    directory.mkdir(parents=True, exist_ok=True)
    data = json.dumps(template).encode()
    atomic_write(directory / f"{template_key}.json", data, tmpdir=directory, durable=False)
    entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    for old in entries[: max(0, len(entries) - KEEP)]:
        old.unlink(missing_ok=True)
