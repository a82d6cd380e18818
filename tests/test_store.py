"""The local store through the Python API: import, tags, removal, garbage collection, checks,
digest verification and crash safety."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from helpers import needs_root
from pyrun.client import Client
from pyrun.errors import DigestMismatch, ImageInUse, ImageNotFound, InvalidArchive, InvalidReference

pytestmark = needs_root


def make_rootfs(path: Path, files: dict[str, bytes], *, compression: str = "") -> Path:
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o755
            ti.mtime = 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    return path


def test_import_unpacks_once_and_shares(client: Client, busybox_tar: Path) -> None:
    a = client.images.import_image(busybox_tar, "bb:a")
    b = client.images.import_image(busybox_tar, "bb:b", changes=["CMD echo hi"])
    assert a.record.diff_ids == b.record.diff_ids
    diff = client.store.layer_diff(a.record.diff_ids[0])
    assert (diff / "bin" / "busybox").is_file()
    layers = list((client.store.root / "layers" / "sha256").iterdir())
    assert len(layers) == 1
    assert b.attrs["Config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert a.attrs["RootFS"]["Layers"] == a.record.diff_ids
    assert a.attrs["Size"] > 1_000_000
    assert client.system.check() == []


def test_import_compressed_inputs(client: Client, tmp_path: Path) -> None:
    files = {"etc/hostname": b"box\n", "bin/tool": b"#!/bin/sh\n"}
    plain = client.images.import_image(make_rootfs(tmp_path / "r.tar", files), "r:plain")
    gz = client.images.import_image(
        make_rootfs(tmp_path / "r.tgz", files, compression="gz"), "r:gz"
    )
    assert plain.record.diff_ids == gz.record.diff_ids  # same tar inside
    assert gz.record.layers[0]["mediaType"].endswith("tar+gzip")
    assert plain.record.layers[0]["digest"] == plain.record.diff_ids[0]
    assert len(list((client.store.root / "layers" / "sha256").iterdir())) == 1


def test_changes(client: Client, busybox_tar: Path) -> None:
    img = client.images.import_image(
        busybox_tar,
        "bb:changed",
        changes=[
            'ENTRYPOINT ["/bin/sh"]',
            "ENV A=1 B=two",
            "LABEL org.example=yes",
            "EXPOSE 80 53/udp",
            "USER nobody",
            "WORKDIR /tmp",
            "VOLUME /data",
        ],
        message="first",
    )
    cfg = img.attrs["Config"]
    assert cfg["Entrypoint"] == ["/bin/sh"]
    assert "A=1" in cfg["Env"] and "B=two" in cfg["Env"]
    assert cfg["Labels"] == {"org.example": "yes"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["User"] == "nobody" and cfg["WorkingDir"] == "/tmp"
    assert cfg["Volumes"] == {"/data": {}}
    assert img.attrs["Comment"] == "first"


def test_tags_and_removal(client: Client, busybox_tar: Path) -> None:
    img = client.images.import_image(busybox_tar, "bb:one")
    img.tag("bb", "two")
    assert sorted(client.images.get(img.id).tags) == ["bb:one", "bb:two"]
    with pytest.raises(ImageInUse, match="multiple repositories"):
        client.images.remove(img.short_id)
    assert client.images.remove("bb:one") == [{"Untagged": "bb:one"}]
    events = client.images.remove("bb:two")
    assert {"Deleted": img.id} in events
    with pytest.raises(ImageNotFound):
        client.images.get("bb:two")
    # Content is collected once nothing references it.
    assert list((client.store.root / "layers" / "sha256").iterdir()) == []
    assert list((client.store.root / "blobs" / "sha256").iterdir()) == []


def test_remove_refuses_image_in_use(client: Client, busybox_tar: Path) -> None:
    img = client.images.import_image(busybox_tar, "bb:used")
    cdir = client.store.root / "containers" / "c0ffee"
    cdir.mkdir(parents=True)
    (cdir / "container.json").write_text(
        json.dumps({"id": "c0ffee", "image": img.record.manifest_digest})
    )
    with pytest.raises(ImageInUse, match="being used by container c0ffee"):
        client.images.remove("bb:used")
    assert client.images.get("bb:used")
    client.images.remove("bb:used", force=True)


def test_prune_dangling_and_all(client: Client, busybox_tar: Path, tmp_path: Path) -> None:
    client.images.import_image(busybox_tar)  # dangling: no name
    kept = client.images.import_image(make_rootfs(tmp_path / "k.tar", {"k": b"k"}), "kept:1")
    res = client.images.prune()
    assert len(res["ImagesDeleted"]) == 1 and res["SpaceReclaimed"] > 0
    assert [i.id for i in client.images.list()] == [kept.id]
    res = client.images.prune(all=True)
    assert client.images.list() == []
    assert client.system.check() == []


def test_unknown_and_bad_references(client: Client) -> None:
    with pytest.raises(ImageNotFound, match="No such image: nothing:latest"):
        client.images.get("nothing")
    with pytest.raises(InvalidReference):
        client.images.get("Bad:Name:x")
    with pytest.raises(ImageNotFound):
        client.images.get("deadbeef")


def test_check_finds_corruption(client: Client, busybox_tar: Path) -> None:
    img = client.images.import_image(busybox_tar, "bb:x")
    blob = client.store.blob_path(img.record.config_digest)
    data = bytearray(blob.read_bytes())
    data[5] ^= 0xFF
    blob.write_bytes(bytes(data))
    problems = client.system.check()
    assert any("is corrupt" in p for p in problems)
    blob.unlink()
    assert any("missing" in p or "No such" in p or "config" in p for p in client.system.check())


def test_digest_mismatch_leaves_store_untouched(
    client: Client, busybox_tar: Path, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    src = client.images.import_image(busybox_tar, "bb:src")
    client.images.copy("bb:src", f"oci:{layout}:v1")
    # Corrupt the layer blob inside the layout: a different tar under the same name.
    layer = layout / "blobs" / "sha256" / src.record.layers[0]["digest"][7:]
    make_rootfs(layer, {"evil": b"x"})
    other = Client(tmp_path / "other")
    with pytest.raises(DigestMismatch, match="mismatch"):
        other.images.copy(f"oci:{layout}:v1", "bb:copied")
    assert other.images.list() == []
    assert list((other.store.root / "blobs" / "sha256").iterdir()) == []
    assert list((other.store.root / "layers" / "sha256").iterdir()) == []
    assert other.system.check() == []


def test_unreadable_archive(client: Client, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InvalidArchive, match=r"junk\.tar"):
        client.images.load(junk)
    with pytest.raises(InvalidArchive, match="no such file"):
        client.images.load(tmp_path / "missing.tar")


def test_concurrent_imports_and_gc(client: Client, tmp_path: Path) -> None:
    tars = [make_rootfs(tmp_path / f"t{i}.tar", {f"f{i}": os.urandom(200_000)}) for i in range(6)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            Client(client.store.root).images.import_image(tars[i], f"c:{i}")
            Client(client.store.root).system.prune()
        except BaseException as e:
            import traceback

            traceback.print_exc()
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(t for i in client.images.list() for t in i.tags) == [f"c:{i}" for i in range(6)]
    assert client.system.check() == []


def big_rootfs(path: Path) -> Path:
    """~60 MB in 3000 files: slow enough to be interrupted mid-import."""
    with tarfile.open(path, "w") as tf:
        chunk = os.urandom(20_000)
        for i in range(3000):
            ti = tarfile.TarInfo(f"d{i % 30}/f{i}")
            ti.size = len(chunk)
            tf.addfile(ti, io.BytesIO(chunk))
    return path


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4])
def test_kill_9_during_import(store_root: Path, tmp_path: Path, delay: float) -> None:
    tar = big_rootfs(tmp_path / "big.tar")
    cmd = [
        sys.executable,
        "-m",
        "pyrun.cli",
        "--root",
        str(store_root),
        "import",
        str(tar),
        "big:1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = Client(store_root)
    assert client.system.check() == []
    client.images.import_image(tar, "big:1")
    assert client.system.check() == []
    client.system.prune()
    assert list((store_root / "tmp").iterdir()) == []


def test_timestamps_are_go_rfc3339nano(monkeypatch: pytest.MonkeyPatch) -> None:
    """Go drops trailing zeros when it re-marshals a time; pyrun writes the same bytes so a
    config passed through skopeo or Docker keeps its digest."""
    import calendar

    import pyrun.store as store_mod

    base = calendar.timegm((2026, 11, 27, 22, 5, 9)) * 1_000_000_000
    for micro, text in [
        (0, "2026-11-27T22:05:09Z"),
        (120_000, "2026-11-27T22:05:09.12Z"),
        (123_456, "2026-11-27T22:05:09.123456Z"),
    ]:
        ns = base + micro * 1000 + 789  # nanoseconds below the microsecond are dropped
        monkeypatch.setattr(store_mod.time, "time_ns", lambda ns=ns: ns)
        assert store_mod.now_rfc3339() == text
