"""A container's files and processes from the outside: cp both ways (confined to the
container's root), commit, export, top and stats."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root
from pyrun.client import Client
from pyrun.runtime.containers import Container

pytestmark = needs_root


@pytest.fixture
def box(client: Client, busybox_tar: Path) -> Container:
    client.images.import_image(busybox_tar, "bb:fs")
    c = client.containers.run(
        "bb:fs",
        ["sh", "-c", "echo hello > /data.txt; mkdir -p /d/e; echo x > /d/e/f; "
         "ln -s /etc /d/etc-link; ln -s /etc/shadow /d/shadow-link; touch /ready; sleep 100"],
        detach=True,
        name="box",
    )  # fmt: skip
    for _ in range(200):
        if c.exec_run(["test", "-e", "/ready"]).exit_code == 0:
            break
    return c


def test_cp_both_ways(box: Container, pyrun: PyrunRunner, tmp_path: Path) -> None:
    assert pyrun("cp", "box:/data.txt", str(tmp_path / "out.txt")).returncode == 0
    assert (tmp_path / "out.txt").read_text() == "hello\n"
    # A directory into an existing host directory lands inside it.
    assert pyrun("cp", "box:/d", str(tmp_path)).returncode == 0
    assert (tmp_path / "d" / "e" / "f").read_text() == "x\n"
    # A symlink is copied as a symlink, never followed to the host's file.
    assert os.readlink(tmp_path / "d" / "shadow-link") == "/etc/shadow"
    host = tmp_path / "host.txt"
    host.write_text("from host\n")
    assert pyrun("cp", str(host), "box:/d/").returncode == 0
    assert box.exec_run(["cat", "/d/host.txt"]).output == b"from host\n"
    assert pyrun("cp", str(host), "box:/renamed.txt").returncode == 0
    assert box.exec_run(["cat", "/renamed.txt"]).output == b"from host\n"
    # Through a symlink to /etc, the write stays in the container's /etc.
    name = f"pyrun-cp-escape-{os.getpid()}"
    r = pyrun("cp", str(host), f"box:/d/etc-link/{name}")
    assert r.returncode == 0, r.stderr
    assert not Path("/etc", name).exists()
    assert box.exec_run(["cat", f"/etc/{name}"]).output == b"from host\n"
    # A stopped container's files can be copied too.
    box.kill()
    box.wait()
    assert pyrun("cp", "box:/renamed.txt", str(tmp_path / "after.txt")).returncode == 0
    assert (tmp_path / "after.txt").read_text() == "from host\n"
    assert not os.path.ismount(box.rootfs)


def test_cp_bad_input(box: Container, pyrun: PyrunRunner, tmp_path: Path) -> None:
    for args, code, text in [
        (("cp", "box:/nope", str(tmp_path / "x")), 1, "could not find the file /nope"),
        (("cp", str(tmp_path / "missing"), "box:/"), 1, "could not find the file"),
        (("cp", "/etc/hostname", str(tmp_path / "y")), 125, "exactly one of"),
        (("cp", "ghost:/x", str(tmp_path)), 1, "No such container: ghost"),
    ]:
        r = pyrun(*args)
        assert r.returncode == code and text in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_commit_and_export(
    box: Container, client: Client, pyrun: PyrunRunner, tmp_path: Path
) -> None:
    r = pyrun("commit", "-m", "snapshot", "-a", "Ada <ada@example.org>",
              "-c", 'CMD ["cat", "/data.txt"]', "box", "snap:1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    img = client.images.get("snap:1")
    assert img.id == r.stdout.strip()
    base = client.images.get("bb:fs")
    assert img.record.diff_ids[:-1] == base.record.diff_ids  # base layers shared, one new
    assert img.attrs["Author"] == "Ada <ada@example.org>" and img.attrs["Comment"] == "snapshot"
    assert client.containers.run("snap:1", remove=True) == b"hello\n"
    # The API's commit, without a name.
    rec = box.commit(changes="ENV FOO=bar")
    assert "FOO=bar" in rec.config["config"]["Env"]

    out = tmp_path / "export.tar"
    assert pyrun("export", "-o", str(out), "box").returncode == 0
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert {"data.txt", "d/e/f", "bin/busybox"} <= names
    # To standard output through a pipe (no fsync there), as `pyrun export web | tar t`.
    cli = [sys.executable, "-m", "pyrun.cli", "--root", str(client.store.root)]
    piped = subprocess.run([*cli, "export", "box"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(piped.stdout)) as tar:
        assert "data.txt" in tar.getnames()


def test_top_and_stats(box: Container, pyrun: PyrunRunner, client: Client) -> None:
    other = client.containers.run("bb:fs", ["sleep", "99"], detach=True)
    r = pyrun("top", "box")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["UID", "PID", "PPID"]
    assert any("sleep 100" in line for line in lines[1:])
    assert not any("sleep 99" in line for line in lines[1:])  # only this container's
    top = box.top("-o pid,comm")
    assert top["Titles"] == ["PID", "COMMAND"] and top["Processes"]
    r = pyrun("stats", "--no-stream", "--format", "json", "box")
    sample = json.loads(r.stdout)
    assert sample["Name"] == "box" and sample["PIDs"] >= 1 and sample["MemUsage"] > 0
    r = pyrun("stats", "--no-stream")
    assert "box" in r.stdout and other.short_id in r.stdout
    box.kill()
    box.wait()
    r = pyrun("top", "box")
    assert r.returncode == 1 and "is not running" in r.stderr


def test_more_bad_input_one_line(box: Container, pyrun: PyrunRunner, client: Client) -> None:
    """The other new entry points: one line, a non-zero exit, nothing made."""
    images_before = pyrun("images", "-q").stdout
    cases = [
        (("attach", "ghost"), "No such container: ghost"),
        (("commit", "-c", "BOGUS x", "box", "never:1"), "invalid --change"),
        (("commit", "ghost", "never:1"), "No such container: ghost"),
        (("export", "-o", "/nonexistent-dir/x.tar", "ghost"), "No such container: ghost"),
        (("stats", "--no-stream", "ghost"), "No such container: ghost"),
        (("top", "ghost"), "No such container: ghost"),
        (("volume", "create", "bad/name"), "invalid volume name"),
        (("stop", "-s", "NOPE", "box"), "invalid signal"),
    ]
    for args, text in cases:
        r = pyrun(*args)
        assert r.returncode != 0 and text in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert pyrun("images", "-q").stdout == images_before  # no half-made image
    box.kill()
    box.wait()
    r = pyrun("attach", "box")
    assert r.returncode == 1 and "not running" in r.stderr
