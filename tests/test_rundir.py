"""Containers' runtime directories (Store.run_root, Container.run_dir): the OCI bundle, the /etc
files, the pid file and the root's mount point live on a tmpfs, apart from the store's records,
and a start makes them again."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import needs_root
from pyrun import _core
from pyrun.client import Client
from pyrun.store import Store

pytestmark = needs_root


def fs_type(path: Path) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:rd")
    return client


def test_a_running_containers_files(bb: Client) -> None:
    c = bb.containers.run("bb:rd", ["sleep", "30"], detach=True, network_mode="none")
    try:
        run = c.run_dir
        assert run.parent == bb.store.run_root and run.name == c.id
        assert fs_type(run) == "tmpfs"
        assert sorted(p.name for p in run.iterdir()) == [
            "config.json", "hostname", "hosts", "pid", "resolv.conf", "rootfs",
        ]  # fmt: skip
        assert os.path.ismount(run / "rootfs")
        assert int((run / "pid").read_text()) == c.attrs["State"]["Pid"]
        assert (run / "hostname").read_text() == f"{c.id[:12]}\n"
        attrs = c.attrs
        for key, name in (("HostsPath", "hosts"), ("ResolvConfPath", "resolv.conf"),
                          ("HostnamePath", "hostname")):  # fmt: skip
            assert attrs[key] == str(run / name)
        assert attrs["GraphDriver"]["Data"]["MergedDir"] == str(run / "rootfs")
        # The store keeps the records and the writable layer only.
        assert {p.name for p in c.dir.iterdir()} <= {
            "container.json", "state.json", "upper", "work", "monitor.json", "monitor.log",
            "container.log", "attach.sock",
        }  # fmt: skip
        # A write to the container's /etc/hosts lands in the run directory's file.
        c.exec_run(["sh", "-c", "echo 10.9.9.9 extra >> /etc/hosts"])
        assert "extra" in (run / "hosts").read_text()
    finally:
        c.remove(force=True)
    assert not run.exists() and not c.dir.exists()


def test_removals_take_the_run_dir(bb: Client) -> None:
    auto = bb.containers.run("bb:rd", ["true"], detach=True, remove=True, network_mode="none")
    for _ in range(200):
        if not auto.dir.exists():
            break
        time.sleep(0.05)
    assert not auto.dir.exists() and not auto.run_dir.exists()
    out = bb.containers.run("bb:rd", ["true"], remove=True, network_mode="none")
    again = bb.containers.run("bb:rd", ["true"], remove=True, network_mode="none")  # replayed
    assert out == again == b""
    assert list(bb.store.run_root.iterdir()) == []


def test_a_lost_run_dir_is_made_again(bb: Client) -> None:
    """A reboot empties /run: a stopped container starts again all the same."""
    c = bb.containers.run(
        "bb:rd", ["sh", "-c", "cat /etc/hostname"], detach=True, network_mode="none"
    )
    assert c.wait()["StatusCode"] == 0
    _core.remove_tree(str(c.run_dir))
    assert c.attrs["State"]["Status"] == "exited"
    c.start()
    assert c.wait()["StatusCode"] == 0
    assert c.logs().split() == [c.id[:12].encode()] * 2
    assert (c.run_dir / "config.json").is_file()
    c.remove()
    assert not c.run_dir.exists()


def test_the_sweep_takes_run_dirs_without_a_container(bb: Client) -> None:
    kept = bb.containers.create("bb:rd", ["true"], network_mode="none")
    kept.start()
    kept.wait()
    stale = bb.store.run_root / ("f" * 64)
    (stale / "rootfs").mkdir(parents=True)
    (stale / "hosts").write_text("x\n")
    bb.store.gc()
    assert not stale.exists()
    assert kept.run_dir.is_dir()
    kept.remove()


def test_stores_have_their_own_run_roots(tmp_path: Path) -> None:
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    assert a.run_root != b.run_root
    assert a.run_root.parent == b.run_root.parent
    assert Store(tmp_path / "a").run_root == a.run_root


def test_ensure_tmpfs_mounts_once(tmp_path: Path) -> None:
    d = tmp_path / "rt"
    try:
        assert _core.ensure_tmpfs(str(d)) is True
        assert fs_type(d) == "tmpfs"
        assert _core.ensure_tmpfs(str(d)) is False
        (d / "f").write_text("x")
        assert _core.ensure_tmpfs(str(d)) is False and (d / "f").read_text() == "x"
    finally:
        _core.unmount(str(d), detach=True)
    assert not (d / "f").exists()


def test_ensure_tmpfs_refuses_a_path_through_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError) as info:
        _core.ensure_tmpfs(str(blocker / "rt"))
    assert str(blocker / "rt") in str(info.value) and "\n" not in str(info.value)
    assert blocker.read_text() == "x" and not os.path.ismount(blocker)
