"""Named and anonymous volumes: -v NAME:/path and --mount type=volume, the image's content
copied into a new volume, read-only mounts, data kept across containers, anonymous volumes
removed by rm -v and --rm (detached too), the volume commands and their refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root
from pyrun.client import Client

pytestmark = needs_root


@pytest.fixture
def bb(client: Client, busybox_tar: Path, pyrun: PyrunRunner) -> PyrunRunner:
    client.images.import_image(busybox_tar, "bb:vol", changes=["VOLUME /declared"])
    return pyrun


def names(pyrun: PyrunRunner) -> list[str]:
    return pyrun("volume", "ls", "-q").stdout.split()


def test_named_volume_lifecycle(bb: PyrunRunner, store_root: Path) -> None:
    r = bb(
        "run",
        "--rm",
        "-v",
        "data:/etc",
        "bb:vol",
        "sh",
        "-c",
        "cat /etc/passwd >/dev/null && echo kept > /etc/mine",
    )
    assert r.returncode == 0, r.stderr  # the image's /etc was copied into the new volume
    r = bb("run", "--rm", "--mount", "type=volume,source=data,target=/x,readonly", "bb:vol",
           "sh", "-c", "cat /x/mine; touch /x/new 2>&1")  # fmt: skip
    assert r.stdout.splitlines() == ["kept", "touch: /x/new: Read-only file system"]
    info = json.loads(bb("volume", "inspect", "data").stdout)[0]
    assert info["Name"] == "data" and info["Driver"] == "local"
    assert Path(info["Mountpoint"]) == store_root / "volumes" / "data" / "_data"
    assert (Path(info["Mountpoint"]) / "mine").read_text() == "kept\n"
    # nocopy: an existing volume is never refilled, a new one with nocopy starts empty.
    # (Only the mount points of the files every container gets, as in Docker.)
    r = bb("run", "--rm", "-v", "empty:/etc:nocopy", "bb:vol", "ls", "/etc")
    assert r.returncode == 0 and r.stdout.split() == ["hostname", "hosts", "resolv.conf"]
    # In use: refused unless forced.
    assert (
        bb("run", "-d", "--name", "user", "-v", "data:/d", "bb:vol", "sleep", "100").returncode == 0
    )
    r = bb("volume", "rm", "data")
    assert r.returncode == 1 and "in use by container(s) user" in r.stderr
    assert bb("rm", "-f", "user").returncode == 0
    assert bb("volume", "rm", "data", "empty").returncode == 0
    # rm without -v left user's anonymous volume (the image's VOLUME /declared), as Docker does.
    assert len(names(bb)) == 1 and bb("volume", "prune").returncode == 0
    assert names(bb) == []
    assert bb("volume", "create", "--label", "a=b", "made").stdout == "made\n"
    assert json.loads(bb("volume", "inspect", "made").stdout)[0]["Labels"] == {"a": "b"}
    assert bb("volume", "prune").stdout == ""  # named volumes stay without -a
    assert "made" in bb("volume", "prune", "-a").stdout


def test_anonymous_volumes(bb: PyrunRunner) -> None:
    # -v /path, a --mount without a source and the image's VOLUME each get one.
    r = bb("run", "--name", "anon", "-v", "/a", "--mount", "type=volume,target=/b",
           "bb:vol", "sh", "-c", "touch /a/x /b/y /declared/z")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(names(bb)) == 3
    # A restart keeps them: the same three volumes, the files still there.
    r = bb("start", "-a", "anon")
    assert r.returncode == 0 and len(names(bb)) == 3
    assert bb("rm", "-v", "anon").returncode == 0
    assert names(bb) == []
    # --rm takes them too, in the foreground and when detached (the monitor removes them).
    assert bb("run", "--rm", "-v", "/a", "bb:vol", "true").returncode == 0
    r = bb("run", "--rm", "-d", "-v", "/a", "bb:vol", "true")
    assert r.returncode == 0
    deadline = time.monotonic() + 10
    while names(bb) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert names(bb) == []
    # Without -v, rm leaves anonymous volumes for `volume prune`.
    bb("run", "--name", "keep", "-v", "/a", "bb:vol", "true")
    bb("rm", "keep")
    assert len(names(bb)) == 2  # /a and /declared
    assert len(bb("volume", "prune").stdout.splitlines()) == 3


def test_volume_bad_input(bb: PyrunRunner) -> None:
    for args, code, text in [
        (("run", "--rm", "-v", "bad name:/x", "bb:vol", "true"), 125, "invalid volume name"),
        (
            ("run", "--rm", "-v", "v1:relative", "bb:vol", "true"),
            125,
            "mount path must be absolute",
        ),
        (
            ("run", "--rm", "--mount", "type=volume,source=x", "bb:vol", "true"),
            125,
            "target is required",
        ),
        (("volume", "inspect", "ghost"), 1, "no such volume: ghost"),
        (("volume", "rm", "ghost"), 1, "no such volume: ghost"),
        (("volume", "create", "-d", "nfs", "x1"), 1, "not supported"),
    ]:
        r = bb(*args)
        assert r.returncode == code and text in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
