"""Bind mounts and tmpfs in `pyrun run`: `-v`, `--mount`, `--tmpfs`, `--env-file`, with Docker's
syntax; bad specs fail with one line (exit 125) before any container exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root
from pyrun.client import Client, ContainerError

pytestmark = needs_root


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:mnt")
    return client


def test_bind_read_write_and_read_only(bb: Client, tmp_path: Path) -> None:
    host = tmp_path / "data"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    out = bb.containers.run(
        "bb:mnt",
        ["sh", "-c", "cat /data/in.txt; echo back > /data/out.txt"],
        remove=True,
        volumes=[f"{host}:/data"],
    )
    assert out == b"from host\n"
    assert (host / "out.txt").read_text() == "back\n"
    with pytest.raises(ContainerError, match="Read-only file system"):
        bb.containers.run(
            "bb:mnt",
            ["touch", "/data/nope"],
            remove=True,
            volumes={str(host): {"bind": "/data", "mode": "ro"}},
        )
    assert not (host / "nope").exists()


def test_volume_creates_missing_host_dir_and_mount_keeps_it_strict(
    bb: Client, tmp_path: Path
) -> None:
    made = tmp_path / "made" / "here"
    bb.containers.run("bb:mnt", ["true"], remove=True, volumes=[f"{made}:/m"])
    assert made.is_dir()
    from pyrun.runtime.spec import SpecError

    with pytest.raises(SpecError, match="bind source path does not exist"):
        bb.containers.run(
            "bb:mnt",
            ["true"],
            remove=True,
            mounts=[f"type=bind,source={tmp_path}/missing,target=/m"],
        )
    assert bb.containers.list(all=True) == []


def test_tmpfs_mounts(bb: Client) -> None:
    out = bb.containers.run(
        "bb:mnt",
        ["sh", "-c", "grep -E ' /(scratch|t2) ' /proc/mounts"],
        remove=True,
        tmpfs=["/scratch:size=1m"],
        mounts=["type=tmpfs,target=/t2,tmpfs-mode=1770"],
    )
    lines = out.decode().splitlines()
    scratch = next(line for line in lines if " /scratch " in line)
    assert "tmpfs" in scratch and "size=1024k" in scratch and "noexec" in scratch
    t2 = next(line for line in lines if " /t2 " in line)
    assert "mode=1770" in t2


def test_bind_target_is_normalised_and_created(bb: Client, tmp_path: Path) -> None:
    """`..` in a destination is cleaned and the missing mount point is created in the rootfs
    (symlinked destinations are covered in test_runtime_core.py)."""
    host = tmp_path / "src"
    host.mkdir()
    (host / "f").write_text("x")
    out = bb.containers.run(
        "bb:mnt",
        ["sh", "-c", "ls /bin/evil-mount"],
        remove=True,
        volumes=[f"{host}:/bin/../bin/evil-mount"],
    )
    assert out == b"f\n"


def test_env_file(pyrun: PyrunRunner, busybox_tar: Path, tmp_path: Path) -> None:
    assert pyrun("import", str(busybox_tar), "bb:env").returncode == 0
    env = tmp_path / "env.list"
    env.write_text("# comment\nA=1\n\nB=two words\n")
    res = pyrun(
        "run",
        "--rm",
        "--env-file",
        str(env),
        "-e",
        "A=override",
        "bb:env",
        "sh",
        "-c",
        "echo $A/$B",
    )
    assert res.returncode == 0 and res.stdout == "override/two words\n"
    bad = tmp_path / "bad.list"
    bad.write_text("GOOD=1\nBAD KEY=2\n")
    res = pyrun("run", "--rm", "--env-file", str(bad), "bb:env", "true")
    assert res.returncode == 125 and "bad.list:2" in res.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-v", "bad/name:/x"], "invalid volume name"),
        (["-v", "a:b:c:d"], "expected /host/path:/container/path"),
        (["-v", "/tmp:rel"], "mount path must be absolute"),
        (["-v", "/tmp:/x:bogus"], "invalid mode"),
        (["-v", "/tmp:/"], "cannot mount over /"),
        (["--mount", "type=image,target=/x"], "type 'image' is not supported"),
        (["--mount", "type=bind,source=/tmp"], "target is required"),
        (["--mount", "type=bind,source=/tmp,target=/x,colour=red"], "unknown option"),
        (["--tmpfs", "relative"], "mount path must be absolute"),
        (["-v", "/tmp:/x", "--tmpfs", "/x"], "duplicate mount point"),
        (["--env-file", "/nonexistent/env"], "/nonexistent/env"),
    ],
)
def test_bad_mount_specs(
    pyrun: PyrunRunner, busybox_tar: Path, flags: list[str], message: str
) -> None:
    assert pyrun("import", str(busybox_tar), "bb:bad").returncode == 0
    res = pyrun("run", "--rm", *flags, "bb:bad", "true")
    assert res.returncode == 125, res
    assert (
        message in res.stderr
        and len(res.stderr.strip().splitlines()) == 1
        and "Traceback" not in res.stderr
    )
    assert pyrun("ps", "-aq").stdout == ""
