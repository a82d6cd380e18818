"""Resolve `--user`/`USER` against the image's /etc/passwd and /etc/group, as Docker does, reading
them through a symlink-safe join so an image cannot make pyrun read a host file."""

from __future__ import annotations

import os
import posixpath
from typing import NamedTuple

from pyrun.errors import PyrunError


class UserError(PyrunError):
    exit_code = 125


def secure_join(root: str, path: str, *, max_links: int = 40, follow_last: bool = True) -> str:
    """Host path of `path` inside `root`, resolving symlinks as if `root` were `/` (they cannot
    leave it); `follow_last=False` leaves a final symlink as it is. Missing components stay."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if (parts or follow_last) and os.path.islink(candidate):
            links += 1
            if links > max_links:
                raise UserError(f"too many levels of symbolic links resolving {path} in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _read_db(rootfs: str, name: str) -> list[list[str]]:
    try:
        with open(secure_join(rootfs, f"/etc/{name}"), encoding="utf-8", errors="replace") as f:
            return [
                line.rstrip("\n").split(":")
                for line in f
                if line.strip() and not line.startswith("#")
            ]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []


class ResolvedUser(NamedTuple):
    uid: int
    gid: int
    additional_gids: list[int]
    home: str


def resolve_user(rootfs: str, spec: str, group_add: list[str] | None = None) -> ResolvedUser:
    """`spec` is "", "name", "uid", "name:group", "uid:gid" (Docker's --user grammar)."""
    passwd = _read_db(rootfs, "passwd")
    groups = _read_db(rootfs, "group")
    user_part, _, group_part = (spec or "0").partition(":")
    entry = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((p for p in passwd if len(p) >= 4 and p[2] == user_part), None)
    else:
        entry = next((p for p in passwd if len(p) >= 4 and p[0] == user_part), None)
        if entry is None:
            raise UserError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((g for g in groups if len(g) >= 3 and g[0] == group_part), None)
            if g is None:
                raise UserError(
                    f"unable to find group {group_part}: no matching entries in group file"
                )
            gid = int(g[2])
    name = entry[0] if entry is not None else None
    extra: list[int] = []
    if name is not None and not group_part:
        for g in groups:
            if len(g) >= 4 and name in g[3].split(",") and g[2].isdigit() and int(g[2]) != gid:
                extra.append(int(g[2]))
    for add in group_add or []:
        if add.isdigit():
            extra.append(int(add))
        else:
            g = next((g for g in groups if len(g) >= 3 and g[0] == add), None)
            if g is None:
                raise UserError(f"unable to find group {add}: no matching entries in group file")
            extra.append(int(g[2]))
    home = entry[5] if entry is not None and len(entry) >= 6 and entry[5] else "/"
    return ResolvedUser(uid, gid, sorted(set(extra)), posixpath.normpath(home))
