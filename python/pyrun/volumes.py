"""Named volumes: directories the store keeps apart from any container (volumes/<name>/_data,
with volume.json beside it), mounted by `-v NAME:/path` or `--mount type=volume`. A new
volume is filled from the image's content at its mount point on first use, as Docker does;
anonymous volumes (`-v /path`, an image's VOLUME) get random names and go with `rm -v` and
`--rm`."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pyrun.errors import APIError, NotFound, PyrunError
from pyrun.store import Store, now_rfc3339
from pyrun.store.fsutil import atomic_write_json, remove_tree

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


class VolumeNotFound(NotFound):
    pass


class VolumeInUse(APIError):
    pass


class InvalidVolume(PyrunError):
    exit_code = 125


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidVolume(
            f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, "
            "at least two characters"
        )
    return name


def new_anonymous_name() -> str:
    return os.urandom(32).hex()


class Volumes:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.dir = store.root / "volumes"

    def data(self, name: str) -> Path:
        return self.dir / check_name(name) / "_data"

    def create(
        self,
        name: str | None = None,
        *,
        labels: dict[str, str] | None = None,
        anonymous: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """The volume `name` (a new random one when None), made when missing: (info, made)."""
        name = check_name(name) if name else new_anonymous_name()
        target = self.dir / name
        if (target / "volume.json").exists():
            return self.get(name), False
        self.store.ensure()
        self.dir.mkdir(exist_ok=True)
        info = {
            "Name": name,
            "Driver": "local",
            "Mountpoint": str(target / "_data"),
            "CreatedAt": now_rfc3339(),
            "Labels": dict(labels or {}),
            "Options": {},
            "Scope": "local",
            "Anonymous": anonymous,
        }
        tmp = self.store.new_temp(".volume")
        tmp.mkdir()
        (tmp / "_data").mkdir(mode=0o755)
        atomic_write_json(tmp / "volume.json", info)
        try:
            os.rename(tmp, target)  # all or nothing; a racing creator of the same name wins
        except OSError:
            remove_tree(tmp)
            if (target / "volume.json").exists():
                return self.get(name), False
            raise
        return info, True

    def get(self, name: str) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads(
                (self.dir / check_name(name) / "volume.json").read_bytes()
            )
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise VolumeNotFound(f"no such volume: {name}") from None
        return info

    def list(self) -> list[dict[str, Any]]:
        out = []
        if self.dir.is_dir():
            for d in sorted(self.dir.iterdir()):
                with contextlib.suppress(PyrunError, OSError):
                    out.append(self.get(d.name))
        return out

    def users(self, name: str) -> builtins.list[str]:
        """Containers whose record mounts the volume."""
        found: builtins.list[str] = []
        cdir = self.store.root / "containers"
        for meta in cdir.glob("*/container.json") if cdir.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                rec = json.loads(meta.read_bytes())
                if name in volume_names(rec.get("options", {})):
                    found.append(str(rec.get("name", meta.parent.name)))
        return found

    def remove(self, name: str, *, force: bool = False) -> None:
        self.get(name)
        users = self.users(name)
        if users and not force:
            raise VolumeInUse(
                f"remove {name}: volume is in use by container(s) {', '.join(sorted(users))}"
            )
        trash = self.store.new_temp(".volume")
        os.rename(self.dir / name, trash)
        remove_tree(trash)

    def prune(self, *, all: bool = False) -> builtins.list[str]:
        """Unused anonymous volumes (every unused one with all=True), as Docker 23+ does."""
        removed: builtins.list[str] = []
        for info in self.list():
            if (all or info.get("Anonymous")) and not self.users(info["Name"]):
                with contextlib.suppress(PyrunError, OSError):
                    self.remove(info["Name"])
                    removed.append(info["Name"])
        return removed


def volume_names(options: dict[str, Any]) -> list[str]:
    """The named volumes a container's run options mount."""
    names = []
    for spec in options.get("volumes") or []:
        source = spec.split(":")[0]
        if ":" in spec and source and not source.startswith("/"):
            names.append(source)
    for spec in options.get("mounts") or []:
        fields = dict(item.partition("=")[::2] for item in spec.split(","))
        if fields.get("type", "volume") == "volume":
            src = fields.get("source") or fields.get("src")
            if src:
                names.append(src)
    return names
