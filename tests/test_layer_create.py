"""create_layer and detect_compression: overlay upper dirs to OCI whiteouts, entry order, PAX
format, numeric owners, hardlinks, capabilities, compression, reproducibility, mtime clamping."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers import root_test as needs_root
from layergen import (
    CAP_V2_NET_BIND,
    OPQ,
    Compression,
    Entry,
    RawMember,
    decompress,
    layer_tar,
    model_tree,
    read_raw,
    sha256,
    snapshot,
)
from pyrun import _core


def _create(src: Path, out: Path, **kw: object) -> tuple[_core.LayerResult, list[RawMember]]:
    res = _core.create_layer(str(src), str(out), **kw)  # type: ignore[arg-type]
    return res, read_raw(decompress(out.read_bytes()))


def _names(members: list[RawMember]) -> list[str]:
    return [m.name.removeprefix("./").rstrip("/") for m in members if m.name not in ("./", ".")]


def _by_name(members: list[RawMember]) -> dict[str, RawMember]:
    return {m.name.removeprefix("./").rstrip("/"): m for m in members}


def _tree(root: Path, mtime: int = 1_600_000_000, order: int = 1) -> Path:
    """A small tree with files, dirs, a symlink, a hardlink and an executable, created in the
    given order (1 or -1) so two copies differ in inode numbers and readdir order only."""
    specs: list[tuple[str, str, bytes]] = [
        ("b", "dir", b""),
        ("a", "dir", b""),
        ("a-b", "file", b"dash"),
        ("a/b", "file", b"ab"),
        ("a/A", "file", b"cap"),
        ("a/z", "dir", b""),
        ("a/z/deep", "file", b"deep" * 1000),
        ("b/run.sh", "file", b"#!/bin/sh\n"),
        ("c", "symlink", b"a/b"),
    ]
    root.mkdir()
    ordered = specs if order == 1 else sorted(specs, key=lambda s: (s[0].count("/"), s[0]))[::-1]
    ordered = sorted(ordered, key=lambda s: s[0].count("/"))  # parents first
    for rel, kind, data in ordered:
        p = root / rel
        if kind == "dir":
            p.mkdir()
        elif kind == "file":
            p.write_bytes(data)
        else:
            os.symlink(data.decode(), p)
    os.link(root / "a" / "b", root / "hl")
    os.chmod(root / "b" / "run.sh", 0o755)
    for p in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(p, (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))
    return root


# ------------------------------------------------------------------------------------------
# detect_compression
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "gzip"),
        (b"\x28\xb5\x2f\xfd\x04\x58", "zstd"),
        (b"a" * 100 + b"\0" * 157 + b"ustar\x0000", "none"),
        (b"", "none"),
        (b"\x1f", "none"),
        (b"\x28\xb5\x2f", "none"),
        (b"\x00" * 512, "none"),
    ],
)
def test_detect_compression(header: bytes, expected: str) -> None:
    assert _core.detect_compression(header) == expected


# ------------------------------------------------------------------------------------------
# Output format
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_compressions_and_result(tmp_path: Path, comp: Compression) -> None:
    src = _tree(tmp_path / "src")
    out = tmp_path / "out"
    res, members = _create(src, out, compression=comp)
    blob = out.read_bytes()
    tar = decompress(blob)
    assert _core.detect_compression(blob[:8]) == comp
    assert res == {
        "digest": sha256(blob),
        "diff_id": sha256(tar),
        "size": len(blob),
        "uncompressed_size": len(tar),
        "entries": len(members),
    }
    assert _core.sha256_file(str(out)) == res["digest"]
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert tf.getmembers()


@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_levels_change_bytes_not_content(tmp_path: Path, comp: Compression) -> None:
    src = _tree(tmp_path / "src")
    r1, _ = _create(src, tmp_path / "fast", compression=comp, level=1)
    r9, _ = _create(src, tmp_path / "best", compression=comp, level=9)
    assert r1["diff_id"] == r9["diff_id"]


def test_entries_are_sorted_parents_first(tmp_path: Path) -> None:
    _, members = _create(_tree(tmp_path / "src"), tmp_path / "out", compression="none")
    names = _names(members)
    assert len(names) == len(set(names))
    assert set(names) == {"a", "a-b", "a/A", "a/b", "a/z", "a/z/deep", "b", "b/run.sh", "c", "hl"}
    for i, n in enumerate(names):
        if "/" in n:
            assert names.index(n.rsplit("/", 1)[0]) < i, f"{n} before its parent"
    siblings: dict[str, list[str]] = {}
    for n in names:
        parent, _, base = n.rpartition("/")
        siblings.setdefault(parent, []).append(base)
    for parent, kids in siblings.items():
        assert kids == sorted(kids, key=os.fsencode), f"children of {parent!r}: {kids}"


def test_pax_format_numeric_owners_dir_slashes(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    long_dir = src / ("d" * 120)
    long_dir.mkdir()
    (long_dir / ("f" * 200)).write_bytes(b"long")
    os.symlink("t" * 180, src / "longlink")
    _, members = _create(src, tmp_path / "out", compression="none")
    by = _by_name(members)
    for m in members:
        assert m.typeflag not in (b"L", b"K"), f"GNU long-name member for {m.name}"
        assert m.magic == b"ustar\x0000", f"{m.name}: magic {m.magic!r} is not POSIX ustar"
        assert m.uname == b""
        assert m.gname == b""
        if m.typeflag == b"5":
            assert m.name.endswith("/"), m.name
    assert by["d" * 120 + "/" + "f" * 200].data[:4] == b"long"
    assert by["longlink"].linkname == "t" * 180
    assert by["c"].typeflag == b"2"
    assert by["c"].linkname == "a/b"


@needs_root
def test_owners_modes_and_hardlinks(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    os.chown(src / "a" / "b", 1000, 65534)
    os.chmod(src / "a" / "b", 0o4750)
    os.chown(src / "b", 65534, 1000)
    os.chmod(src / "b", 0o1777)
    os.lchown(src / "c", 1000, 1000)
    _, members = _create(src, tmp_path / "out", compression="none")
    by = _by_name(members)
    with tarfile.open(tmp_path / "out") as tf:
        ti = {m.name.removeprefix("./").rstrip("/"): m for m in tf.getmembers()}
    assert (ti["a/b"].uid, ti["a/b"].gid, ti["a/b"].mode) == (1000, 65534, 0o4750)
    assert (ti["b"].uid, ti["b"].gid, ti["b"].mode) == (65534, 1000, 0o1777)
    assert (ti["c"].uid, ti["c"].gid) == (1000, 1000)
    # "a/b" sorts before "hl": the first name carries the data, the second links to it
    assert by["a/b"].typeflag == b"0"
    assert by["hl"].typeflag == b"1"
    assert by["hl"].linkname.removeprefix("./") == "a/b"
    assert by["hl"].size == 0


@needs_root
def test_security_capability_is_exported(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    os.setxattr(src / "b" / "run.sh", "security.capability", CAP_V2_NET_BIND)
    _, members = _create(src, tmp_path / "out", compression="none")
    by = _by_name(members)
    assert by["b/run.sh"].pax["SCHILY.xattr.security.capability"] == CAP_V2_NET_BIND
    assert "SCHILY.xattr.security.capability" not in by["a/b"].pax


def test_sockets_are_skipped(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(src / "sock"))
        _, members = _create(src, tmp_path / "out", compression="none")
    assert "sock" not in _names(members)


@needs_root
def test_devices_without_overlay_upper_stay_devices(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "wh", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(src / "a", "trusted.overlay.opaque", b"y")
    _, members = _create(src, tmp_path / "out", compression="none")
    by = _by_name(members)
    assert by["null"].typeflag == b"3"
    assert by["wh"].typeflag == b"3"
    names = _names(members)
    assert not any(n.rpartition("/")[2].startswith(".wh.") for n in names), names
    assert not any(k.startswith("SCHILY.xattr.trusted.") for m in members for k in m.pax)


# ------------------------------------------------------------------------------------------
# overlay_upper
# ------------------------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("comp", ["none", "gzip"])
def test_overlay_upper_converts_whiteouts_and_opaque_dirs(
    tmp_path: Path, comp: Compression
) -> None:
    upper = tmp_path / "upper"
    (upper / "opq" / "kept").mkdir(parents=True)
    (upper / "opq" / "new").write_bytes(b"new")
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    (upper / "sub").mkdir()
    os.mknod(upper / "gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(upper / "sub" / "gone2", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(upper / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (upper / "file").write_bytes(b"f")
    _, members = _create(upper, tmp_path / "out", compression=comp, overlay_upper=True)
    names = _names(members)
    by = _by_name(members)
    assert set(names) == {
        ".wh.gone", "file", "null", "opq", f"opq/{OPQ}", "opq/kept", "opq/new", "sub",
        "sub/.wh.gone2",
    }  # fmt: skip
    for wh in (".wh.gone", "sub/.wh.gone2", f"opq/{OPQ}"):
        assert by[wh].typeflag == b"0", wh
        assert by[wh].size == 0, wh
    assert by["opq"].typeflag == b"5"
    assert names.index("opq") < names.index(f"opq/{OPQ}")
    assert by["null"].typeflag == b"3"  # a real device is not a whiteout
    assert not any(k.startswith("SCHILY.xattr.trusted.") for m in members for k in m.pax)


@needs_root
def test_overlay_upper_layer_extracts_back_to_the_same_upper(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "opq").mkdir(parents=True)
    (upper / "opq" / "new").write_bytes(b"new")
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    os.mknod(upper / "gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    _core.create_layer(str(upper), str(tmp_path / "out"), overlay_upper=True)
    dst = tmp_path / "dst"
    dst.mkdir()
    _core.extract_layer(str(tmp_path / "out"), str(dst))
    assert os.getxattr(dst / "opq", "trusted.overlay.opaque") == b"y"
    assert os.lstat(dst / "gone").st_rdev == os.makedev(0, 0)
    assert stat.S_ISCHR(os.lstat(dst / "gone").st_mode)
    assert (dst / "opq" / "new").read_bytes() == b"new"


# ------------------------------------------------------------------------------------------
# Reproducibility
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_same_content_gives_identical_bytes(tmp_path: Path, comp: Compression) -> None:
    """Twice from one tree, and once from a copy built in another order (other inodes, other
    readdir order, later ctimes and atimes): the same bytes."""
    one = _tree(tmp_path / "one")
    two = _tree(tmp_path / "two", order=-1)
    r1, _ = _create(one, tmp_path / "o1", compression=comp)
    r2, _ = _create(one, tmp_path / "o2", compression=comp)
    r3, _ = _create(two, tmp_path / "o3", compression=comp)
    blob = (tmp_path / "o1").read_bytes()
    assert (tmp_path / "o2").read_bytes() == blob
    assert (tmp_path / "o3").read_bytes() == blob
    assert r1 == r2 == r3


def test_source_date_epoch_clamps_only_later_mtimes(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", mtime=2_000_000_000)
    os.utime(src / "a" / "b", (1_000_000_000, 1_000_000_000))
    out = tmp_path / "out"
    _core.create_layer(str(src), str(out), compression="none", source_date_epoch=1_500_000_000)
    with tarfile.open(out) as tf:
        mt = {m.name.removeprefix("./").rstrip("/"): m.mtime for m in tf.getmembers()}
    assert mt["a/b"] == 1_000_000_000
    assert mt["hl"] == 1_000_000_000  # the same inode as a/b
    assert all(v == 1_500_000_000 for k, v in mt.items() if k not in ("a/b", "hl", "", "."))


def test_mtimes_kept_without_source_date_epoch(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", mtime=1_234_567_890)
    _core.create_layer(str(src), str(tmp_path / "out"), compression="none")
    with tarfile.open(tmp_path / "out") as tf:
        assert {m.mtime for m in tf.getmembers() if m.name not in ("./", ".")} == {1_234_567_890}


@needs_root
def test_real_overlay_upper_dir_round_trips(tmp_path: Path) -> None:
    """Changes made through a kernel overlay mount (delete, replace a dir, copy-up, hardlink):
    create_layer(upper, overlay_upper=True) applied onto a copy of the lower tree reproduces
    the merged view."""
    base = [
        Entry("a", "dir"),
        Entry("a/f1", "file", b"one"),
        Entry("a/f2", "file", b"two", mode=0o4755),
        Entry("b", "dir"),
        Entry("b/dir", "dir", mode=0o700, uid=1000, gid=1000),
        Entry("b/dir/x", "file", b"x", uid=1000),
        Entry("c", "file", b"lower c"),
        Entry("d", "dir"),
        Entry("d/old", "file", b"old"),
        Entry("d/sub", "dir"),
        Entry("d/sub/deep", "file", b"deep"),
        Entry("l", "symlink", target="a/f1", mode=0o777),
    ]
    lower = model_tree([layer_tar(base)], tmp_path / "lower")
    flat = model_tree([layer_tar(base)], tmp_path / "flat")
    upper, work, mnt = tmp_path / "upper", tmp_path / "work", tmp_path / "mnt"
    for p in (upper, work, mnt):
        p.mkdir()
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    res = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        if "permission denied" in res.stderr.lower() or "not permitted" in res.stderr.lower():
            pytest.skip(f"cannot mount overlay (EPERM): {res.stderr.strip()}")
        raise AssertionError(f"mount failed: {res.stderr.strip()}")
    try:
        (mnt / "a" / "f1").unlink()
        shutil.rmtree(mnt / "d")
        (mnt / "d").mkdir()
        (mnt / "d" / "new").write_bytes(b"new")
        (mnt / "c").write_bytes(b"upper c")
        os.chmod(mnt / "b" / "dir", 0o750)
        os.link(mnt / "a" / "f2", mnt / "a" / "f2link")
        (mnt / "e").mkdir()
        (mnt / "e" / "f").write_bytes(b"e")
        (mnt / "l").unlink()
        os.symlink("c", mnt / "l")
        expected = snapshot(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
    r = _core.create_layer(str(upper), str(tmp_path / "out"), overlay_upper=True)
    names = _names(read_raw(decompress((tmp_path / "out").read_bytes())))
    assert "a/.wh.f1" in names
    assert f"d/{OPQ}" in names
    assert r["entries"] == len(names)
    _core.extract_layer(str(tmp_path / "out"), str(flat), whiteouts="apply")
    assert snapshot(flat) == expected


def test_unknown_compression_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        _core.create_layer(str(_tree(tmp_path / "src")), str(tmp_path / "o"), compression="xz")  # type: ignore[arg-type]
