"""The init layer (pyrun/runtime/initlayer.py): the /etc/hosts, /etc/hostname and
/etc/resolv.conf mount targets come from a shared read-only lower instead of each container's
upper directory, and the container still sees its image's own /etc."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from helpers import needs_root
from pyrun.client import Client
from pyrun.runtime.initlayer import NAMES, image_etc, init_layer
from pyrun.store import Store

pytestmark = needs_root


def _retar(src: Path, dst: Path, edit: dict[str, dict[str, object] | None]) -> None:
    """Copy a rootfs tar, changing the attributes of the members named in `edit` (None: drop
    the member); a member not in `src` is added as given."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            name = m.name.lstrip("./")
            if name in edit:
                fields = edit.pop(name)
                if fields is None:
                    continue
                for k, v in fields.items():
                    setattr(m, k, v)
            data = tin.extractfile(m) if m.isfile() else None
            tout.addfile(m, data)
        for name, fields in edit.items():
            m = tarfile.TarInfo(name)
            for k, v in (fields or {}).items():
                setattr(m, k, v)
            tout.addfile(m, io.BytesIO(b""))


def test_targets_stay_out_of_the_upper_and_out_of_commit(client: Client, busybox_tar: Path) -> None:
    client.images.import_image(busybox_tar, "bb:init")
    c = client.containers.run("bb:init", ["sh", "-c", "cat /etc/hostname"], detach=True)
    assert c.wait()["StatusCode"] == 0
    assert c.logs().strip() == c.id[:12].encode()
    upper = c.dir / "upper"
    assert not (upper / "etc").exists(), sorted(p.name for p in upper.iterdir())
    image = c.commit("bb:committed")
    top = client.store.layer_diff(image.diff_ids[-1])
    assert not (top / "etc").exists()
    c.remove()
    # One init layer for every container of images with this /etc.
    again = client.containers.run("bb:init", ["true"], detach=True)
    again.wait()
    again.remove()
    assert len(list((client.store.root / "layers" / "init").iterdir())) == 1
    assert list((client.store.root / "tmp").iterdir()) == []


def test_the_container_sees_its_images_etc(
    client: Client, busybox_tar: Path, tmp_path: Path
) -> None:
    """The topmost lower's directory is the one a container sees: the init layer's /etc has
    the image's mode, owner and times."""
    tar = tmp_path / "odd-etc.tar"
    _retar(busybox_tar, tar, {"etc": {"mode": 0o750, "uid": 7, "gid": 8, "mtime": 1234567890}})
    client.images.import_image(tar, "bb:odd-etc")
    out = client.containers.run(
        "bb:odd-etc", ["stat", "-c", "%a %u %g %Y", "/etc"], remove=True, network_mode="none"
    )
    assert out.split() == [b"750", b"7", b"8", b"1234567890"]
    out = client.containers.run("bb:odd-etc", ["cat", "/etc/hostname"], remove=True)
    assert len(out.strip()) == 12


def test_an_etc_symlink_gets_no_init_layer(
    client: Client, busybox_tar: Path, tmp_path: Path
) -> None:
    """An image whose /etc is a symlink keeps it: the targets are made where it points, as
    without an init layer."""
    tar = tmp_path / "etc-link.tar"
    with tarfile.open(busybox_tar) as t:
        names = [m.name.lstrip("./") for m in t.getmembers()]
    edit: dict[str, dict[str, object] | None] = {n: None for n in names if n.startswith("etc/")}
    edit["etc"] = {"type": tarfile.SYMTYPE, "linkname": "usr/etc"}
    edit["usr/etc"] = {"type": tarfile.DIRTYPE, "mode": 0o755}
    _retar(busybox_tar, tar, edit)
    client.images.import_image(tar, "bb:etc-link")
    out = client.containers.run(
        "bb:etc-link",
        ["sh", "-c", "readlink /etc; cat /usr/etc/hostname"],
        remove=True,
        network_mode="none",
    )
    link, hostname = out.split()
    assert link == b"usr/etc" and len(hostname) == 12
    assert not (client.store.root / "layers" / "init").exists()


def test_image_etc_reads_the_layers_top_down(tmp_path: Path) -> None:
    low, mid, top = (tmp_path / n for n in ("low", "mid", "top"))
    for d in (low, mid, top):
        d.mkdir()
    (low / "etc").mkdir(mode=0o711)
    st = image_etc([str(top), str(mid), str(low)])
    assert not isinstance(st, bool) and st.st_mode & 0o777 == 0o711
    os.mknod(mid / "etc", 0o600 | 0o020000, os.makedev(0, 0))  # an overlay whiteout
    assert image_etc([str(top), str(mid), str(low)]) is False
    os.unlink(mid / "etc")
    os.setxattr(mid, "trusted.overlay.opaque", b"y")  # hides the layers below
    assert image_etc([str(top), str(mid), str(low)]) is True
    (top / "etc").symlink_to("usr/etc")
    assert image_etc([str(top), str(mid), str(low)]) is False
    assert image_etc([]) is True


def test_makers_at_once_share_one_layer(store_root: Path, tmp_path: Path) -> None:
    store = Store(store_root).ensure()
    lower = tmp_path / "layer"
    (lower / "etc").mkdir(parents=True)
    got: list[str | None] = []
    threads = [
        threading.Thread(target=lambda: got.append(init_layer(store, [str(lower)])))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and got[0] is not None
    etc = Path(got[0]) / "etc"
    assert sorted(p.name for p in etc.iterdir()) == sorted(NAMES)
    assert all((etc / n).stat().st_size == 0 and (etc / n).stat().st_mode & 0o777 == 0o644
               for n in NAMES)  # fmt: skip
    assert list(store.tmp.iterdir()) == []


@pytest.mark.parametrize("network", ["none", "host"])
def test_etc_files_are_the_containers_own(client: Client, busybox_tar: Path, network: str) -> None:
    client.images.import_image(busybox_tar, "bb:files")
    out = client.containers.run(
        "bb:files",
        ["sh", "-c", "grep -c localhost /etc/hosts; grep -c nameserver /etc/resolv.conf"],
        remove=True,
        network_mode=network,
    )
    hosts, servers = out.split()
    assert int(hosts) >= 1 and int(servers) >= 1
