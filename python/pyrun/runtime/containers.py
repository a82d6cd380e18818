"""Container records in the store (containers/<id>/container.json) and their lifecycle: create
the overlay root from the image's shared unpacked layers, write the OCI bundle, run it in the
foreground through the Rust runtime, record the outcome, clean up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from pyrun.errors import PyrunError
from pyrun.runtime.spec import RunOptions, build_spec
from pyrun.store import ImageRecord, Store, now_rfc3339
from pyrun.store.fsutil import atomic_write_json, remove_tree

_ADJECTIVES = [
    "brave",
    "calm",
    "clever",
    "eager",
    "fancy",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "shiny",
    "swift",
    "tidy",
    "vivid",
    "witty",
    "zealous",
    "bold",
    "cosy",
    "daring",
]
_NAMES = [
    "babbage",
    "curie",
    "darwin",
    "euler",
    "fermi",
    "galois",
    "hopper",
    "hypatia",
    "kepler",
    "lovelace",
    "maxwell",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "wozniak",
    "yonath",
    "zuse",
    "knuth",
    "lamport",
    "liskov",
    "torvalds",
]


class ContainerNotFound(PyrunError):
    pass


class ContainerConflict(PyrunError):
    exit_code = 125


class ContainerStartError(PyrunError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Container:
    """One container's record and directory."""

    def __init__(self, store: Store, cid: str) -> None:
        self.store = store
        self.id = cid
        self.dir = store.root / "containers" / cid
        self._attrs: dict[str, Any] | None = None

    @property
    def attrs(self) -> dict[str, Any]:
        if self._attrs is None:
            try:
                self._attrs = json.loads((self.dir / "container.json").read_bytes())
            except (FileNotFoundError, ValueError):
                raise ContainerNotFound(f"No such container: {self.id}") from None
        return self._attrs

    def save(self) -> None:
        atomic_write_json(self.dir / "container.json", self.attrs)

    def update(self, **fields: Any) -> None:
        self.attrs.update(fields)
        self.save()

    @property
    def name(self) -> str:
        return str(self.attrs["name"])

    @property
    def pid(self) -> int | None:
        try:
            return int((self.dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def status(self) -> str:
        state = str(self.attrs.get("state", "created"))
        if state == "running":
            pid = self.pid
            if pid is None or not _pid_alive(pid):
                # The pyrun process that ran it is gone (kill -9): the container died with it.
                return "exited"
        return state

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    def mount_rootfs(self, image: ImageRecord) -> str:
        from pyrun import _core

        for d in ("upper", "work", "rootfs"):
            (self.dir / d).mkdir(exist_ok=True)
        lowers = [str(self.store.layer_diff(d)) for d in reversed(image.diff_ids)]
        if not lowers:
            (self.dir / "empty").mkdir(exist_ok=True)
            lowers = [str(self.dir / "empty")]
        links = self.store.root / "layers" / "l"
        links.mkdir(exist_ok=True)
        return _core.mount_overlay(
            lowers,
            str(self.rootfs),
            upper=str(self.dir / "upper"),
            work=str(self.dir / "work"),
            links_dir=str(links),
        )

    def unmount_rootfs(self) -> None:
        from pyrun import _core

        with contextlib.suppress(OSError):
            _core.unmount(str(self.rootfs), detach=True)

    def remove(self, *, force: bool = False) -> None:
        if self.status == "running":
            if not force:
                raise ContainerConflict(
                    f"cannot remove container {self.name}: container is running: "
                    "stop the container before removing or force remove"
                )
            pid = self.pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                for _ in range(100):
                    if not _pid_alive(pid):
                        break
                    time.sleep(0.01)
        self.unmount_rootfs()
        if os.path.ismount(self.rootfs):
            raise ContainerConflict(
                f"cannot remove container {self.name}: its root is still mounted at {self.rootfs}"
            )
        # Rename first so a crash mid-removal never leaves a half container that looks whole.
        trash = self.store.new_temp(".container")
        os.rename(self.dir, trash)
        remove_tree(trash)


def new_id() -> str:
    return os.urandom(32).hex()


def new_name(taken: set[str]) -> str:
    import random

    for _ in range(1000):
        name = f"{random.choice(_ADJECTIVES)}_{random.choice(_NAMES)}"
        if name not in taken:
            return name
    return f"container_{os.urandom(4).hex()}"


def list_containers(store: Store) -> list[Container]:
    cdir = store.ensure().root / "containers"
    out = []
    for meta in cdir.glob("*/container.json"):
        c = Container(store, meta.parent.name)
        with contextlib.suppress(ContainerNotFound):
            _ = c.attrs
            out.append(c)
    out.sort(key=lambda c: str(c.attrs.get("created", "")), reverse=True)
    return out


def get_container(store: Store, ref: str) -> Container:
    """By full or short ID, or by name."""
    containers = list_containers(store)
    for c in containers:
        if c.name == ref.lstrip("/") or c.id == ref:
            return c
    hits = [c for c in containers if c.id.startswith(ref)] if ref else []
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ContainerNotFound(f"multiple containers match {ref!r}: give more of the ID")
    raise ContainerNotFound(f"No such container: {ref}")


def create(
    store: Store,
    image: ImageRecord,
    opts: RunOptions,
    *,
    name: str | None,
    auto_remove: bool,
    image_name: str,
) -> Container:
    taken = {c.name for c in list_containers(store)}
    if name is not None:
        import re

        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
            raise ContainerConflict(
                f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        if name in taken:
            raise ContainerConflict(f'Conflict. The container name "/{name}" is already in use')
    cid = new_id()
    c = Container(store, cid)
    c.dir.mkdir(parents=True)
    c._attrs = {
        "id": cid,
        "name": name or new_name(taken),
        "image": image.manifest_digest,
        "image_id": image.id,
        "image_name": image_name,
        "diff_ids": image.diff_ids,
        "created": now_rfc3339(),
        "state": "created",
        "auto_remove": auto_remove,
        "options": opts.as_dict(),
    }
    c.save()
    return c


def run_foreground(
    store: Store,
    image: ImageRecord,
    c: Container,
    opts: RunOptions,
    *,
    stdio: tuple[int, int] | None = None,
) -> int:
    """Mount, run to completion with the caller's stdio (or stdout/stderr fds `stdio`), record
    the exit, unmount."""
    from pyrun import _core

    try:
        c.mount_rootfs(image)
        spec = build_spec(image.config.get("config", {}), str(c.rootfs), opts, c.id)
        spec["root"]["path"] = str(c.rootfs)
        bundle = c.dir / "bundle"
        bundle.mkdir(exist_ok=True)
        atomic_write_json(bundle / "config.json", spec)
        c.update(state="running", started_at=now_rfc3339(), command=spec["process"]["args"])
        try:
            out = _core.run_container(
                str(bundle), pid_file=str(c.dir / "pid"), stdio=stdio, details=True
            )
        except _core.StartError as e:
            message, code = e.args
            c.update(state="created", exit_code=code, error=message)
            raise ContainerStartError(str(message), int(code)) from None
        except ValueError as e:
            c.update(state="created", exit_code=125, error=str(e))
            raise ContainerStartError(f"invalid container config: {e}", 125) from None
        status = out["exit_code"]
        oom = out["oom_killed"]
        c.update(
            state="exited",
            exit_code=status,
            oom_killed=oom,
            cgroup=out["cgroup"],
            finished_at=now_rfc3339(),
        )
        return status
    finally:
        c.unmount_rootfs()
        if c.attrs.get("auto_remove"):
            c.remove(force=True)
