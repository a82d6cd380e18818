"""extract_layer, one named case at a time: each escape class, corrupt and truncated streams,
digests, byte ranges and fds, device nodes, long PAX names, xattrs, whiteout conversion."""

from __future__ import annotations

import errno
import functools
import io
import os
import random
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from helpers import root_test as needs_root
from layergen import (
    CAP_V2_NET_BIND,
    FIXED_MTIME,
    OPQ,
    OUT,
    Compression,
    Entry,
    Sandbox,
    assert_one_line,
    compress,
    layer_tar,
    make_sandbox,
    raw_member,
    raw_tar,
    sha256,
    snapshot,
)
from pyrun import _core

Whiteouts = Literal["overlay", "apply"]


def _file(
    name: str, data: bytes = b"data", *, mode: int = 0o644, uid: int = 0, gid: int = 0,
    mtime: int = FIXED_MTIME,
) -> Entry:  # fmt: skip
    return Entry(name, "file", data, mode=mode, uid=uid, gid=gid, mtime=mtime)


def _dir(
    name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = FIXED_MTIME
) -> Entry:
    return Entry(name, "dir", mode=mode, uid=uid, gid=gid, mtime=mtime)


def _link(name: str, target: str) -> Entry:
    return Entry(name, "symlink", target=target, mode=0o777)


def _hard(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", target=target)


def _extract(
    tmp: Path, blob: bytes, dest: Path | None = None, **kw: object
) -> tuple[_core.ExtractResult, Path]:
    src = tmp / "layer.blob"
    src.write_bytes(blob)
    if dest is None:
        dest = tmp / "target"
        dest.mkdir(exist_ok=True)
    res = _core.extract_layer(str(src), str(dest), **kw)  # type: ignore[arg-type]
    return res, dest


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return make_sandbox(tmp_path / "box")


def _hostile(
    box: Sandbox, tmp: Path, entries: Sequence[Entry], whiteouts: Whiteouts = "overlay"
) -> _core.LayerError | None:
    """Extract entries into box.target; check that nothing outside changed; return the
    LayerError raised, if any (any other exception fails the test)."""
    blob = tmp / "hostile.tar"
    blob.write_bytes(layer_tar(entries, outside=str(box.outside)))
    before = box.snapshot()
    err: _core.LayerError | None = None
    try:
        _core.extract_layer(str(blob), str(box.target), whiteouts=whiteouts)
    except _core.LayerError as e:
        assert_one_line(e)
        err = e
    assert box.snapshot() == before, "an entry escaped the target directory"
    return err


def _rel_out(box: Sandbox) -> str:
    return str(box.outside).lstrip("/")


# ------------------------------------------------------------------------------------------
# Escapes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../pyrun-evil", "../outside/victim", "a/../../outside/evil", "./../../above"]
)
def test_dotdot_name_is_rejected_as_escape(box: Sandbox, tmp_path: Path, name: str) -> None:
    err = _hostile(box, tmp_path, [_dir("a"), _file(name, b"pwned")])
    assert err is not None, f"{name!r} was accepted"
    assert "escapes" in str(err)


def test_dotdot_that_stays_inside_lands_at_the_clean_path_or_is_refused(tmp_path: Path) -> None:
    try:
        _, t = _extract(tmp_path, layer_tar([_dir("a"), _dir("b"), _file("a/../b/f", b"ok")]))
    except _core.LayerError as e:
        assert_one_line(e)
        return
    assert (t / "b" / "f").read_bytes() == b"ok"


def test_absolute_name_lands_inside_target(tmp_path: Path) -> None:
    _, t = _extract(tmp_path, layer_tar([_dir("/etc"), _file("/etc/x", b"abs")]))
    assert (t / "etc" / "x").read_bytes() == b"abs"
    assert (t / "etc").is_dir()


@pytest.mark.parametrize("target", ["/", "../../..", "/.."])
def test_symlinked_parent_to_root_resolves_inside_target(
    box: Sandbox, tmp_path: Path, target: str
) -> None:
    err = _hostile(box, tmp_path, [_link("l", target), _file("l/pyrun-evil", b"in")])
    assert err is None
    assert (box.target / "pyrun-evil").read_bytes() == b"in"
    assert os.readlink(box.target / "l") == target
    assert not os.path.lexists("/pyrun-evil")


def test_symlinked_parent_to_host_path_stays_inside_target(box: Sandbox, tmp_path: Path) -> None:
    err = _hostile(box, tmp_path, [_link("l", OUT), _file("l/victim", b"pwned")])
    if err is None:  # the file went somewhere inside the root (under <root>/<OUT>, or l/)
        found = [p for p in box.target.rglob("victim") if p.read_bytes() == b"pwned"]
        assert found, "the entry vanished"


@pytest.mark.parametrize("link_target", [OUT + "/victim", "../outside/victim", "/"])
def test_symlink_then_file_of_same_name_replaces_the_symlink(
    box: Sandbox, tmp_path: Path, link_target: str
) -> None:
    err = _hostile(box, tmp_path, [_link("f", link_target), _file("f", b"new")])
    assert err is None
    assert stat.S_ISREG(os.lstat(box.target / "f").st_mode)
    assert (box.target / "f").read_bytes() == b"new"
    assert (box.outside / "victim").read_bytes() == b"precious"


def test_symlink_then_dir_of_same_name_replaces_the_symlink(box: Sandbox, tmp_path: Path) -> None:
    err = _hostile(box, tmp_path, [_link("d", OUT), _dir("d", mode=0o700), _file("d/x", b"x")])
    assert err is None
    assert stat.S_ISDIR(os.lstat(box.target / "d").st_mode)
    assert stat.S_IMODE(os.lstat(box.target / "d").st_mode) == 0o700
    assert (box.target / "d" / "x").read_bytes() == b"x"


@pytest.mark.parametrize(
    "linkname", ["../outside/victim", OUT + "/victim", "../../root/outside/victim", "/../victim"]
)
def test_hardlink_escaping_the_tree_is_rejected(
    box: Sandbox, tmp_path: Path, linkname: str
) -> None:
    err = _hostile(box, tmp_path, [_hard("h", linkname)])
    assert err is not None, f"hardlink to {linkname!r} was accepted"
    assert os.stat(box.outside / "victim").st_nlink == 1


@pytest.mark.parametrize("link_target", [OUT, "../outside", "/", ".."])
def test_hardlink_through_symlinked_dir_is_rejected(
    box: Sandbox, tmp_path: Path, link_target: str
) -> None:
    err = _hostile(box, tmp_path, [_link("l", link_target), _hard("h", "l/victim")])
    assert err is not None
    assert os.stat(box.outside / "victim").st_nlink == 1


def test_hardlink_to_a_symlink_links_the_symlink_itself(box: Sandbox, tmp_path: Path) -> None:
    err = _hostile(box, tmp_path, [_link("s", OUT + "/victim"), _hard("h", "s")])
    if err is None:
        assert os.readlink(box.target / "h") == str(box.outside / "victim")
    assert os.stat(box.outside / "victim").st_nlink == 1


@pytest.mark.parametrize("link_target", [OUT, "../outside", "/"])
def test_dir_replaced_by_symlink_then_file_through_it(
    box: Sandbox, tmp_path: Path, link_target: str
) -> None:
    entries = [_dir("d"), _file("d/x"), _link("d", link_target), _file("d/victim", b"pwned")]
    _hostile(box, tmp_path, entries)


def test_dir_replaced_by_symlink_to_root_then_file_lands_in_root(
    box: Sandbox, tmp_path: Path
) -> None:
    """The same as without the earlier directory: nothing may still point at the removed one."""
    entries = [_dir("d"), _file("d/x"), _link("d", "/"), _file("d/victim", b"in root")]
    err = _hostile(box, tmp_path, entries)
    assert err is None
    assert os.readlink(box.target / "d") == "/"
    assert (box.target / "victim").read_bytes() == b"in root"


@pytest.mark.parametrize(
    "entries",
    [
        [_dir("d"), _hard("h", "d")],
        [_dir("d"), _hard("d2", "d/")],
        [_hard("h", ".")],
        [_hard("h", "")],
        [_hard("h", "missing")],
    ],
    ids=["dir", "dir-slash", "root", "empty", "missing"],
)
def test_bad_hardlink_targets_are_layer_errors(tmp_path: Path, entries: list[Entry]) -> None:
    with pytest.raises(_core.LayerError) as ei:
        _extract(tmp_path, layer_tar(entries))
    assert_one_line(ei.value)


def test_hardlink_to_itself_is_a_no_op_or_a_layer_error(tmp_path: Path) -> None:
    try:
        _, t = _extract(tmp_path, layer_tar([_file("f", b"data"), _hard("f", "f")]))
    except _core.LayerError as e:
        assert_one_line(e)
        return
    assert (t / "f").read_bytes() == b"data"


@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
@pytest.mark.parametrize(
    "entries",
    [
        [_file("f"), _file("f/x")],
        [_file("f"), _dir("f/sub/deeper")],
        [_file("f"), _file("f/.wh.x", b"")],
        [Entry("p", "fifo"), _file("p/x")],
    ],
    ids=["file-under-file", "dir-under-file", "whiteout-under-file", "file-under-fifo"],
)
def test_entry_under_a_non_directory_is_a_layer_error(
    tmp_path: Path, entries: list[Entry], whiteouts: Whiteouts
) -> None:
    """A parent that is a regular file (or fifo): refused as a LayerError naming the entry, or
    resolved by replacing the parent (or, for a whiteout, nothing to delete); never a bare
    OSError."""
    try:
        _, t = _extract(tmp_path, layer_tar(entries), whiteouts=whiteouts)
    except _core.LayerError as e:
        assert entries[-1].name in assert_one_line(e)
        return
    if ".wh." not in entries[-1].name:
        assert os.path.lexists(t / entries[-1].name)


@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
@pytest.mark.parametrize(
    "entries",
    [
        [_link("l", OUT), _file("l/.wh.victim", b"")],
        [_link("l", "../outside"), _file("l/.wh.victim", b"")],
        [_link("l", OUT), _file(f"l/{OPQ}", b"")],
        [_link("l", OUT + "/sub"), _file(f"l/{OPQ}", b"")],
        [_file("../outside/.wh.victim", b"")],
        [_file(f"../outside/{OPQ}", b"")],
        [_file("../.wh.outside", b"")],
        [_file(".wh..", b"")],
        [_file("/.wh..", b"")],
    ],
    ids=lambda e: "+".join(x.name for x in e),
)
@needs_root
def test_whiteouts_never_delete_outside(
    box: Sandbox, tmp_path: Path, entries: list[Entry], whiteouts: Whiteouts
) -> None:
    _hostile(box, tmp_path, entries, whiteouts)
    assert box.target.is_dir()


@pytest.mark.parametrize("name", [".", "..", "./", "a/./../.."])
@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_entries_naming_the_root_do_not_replace_it(
    box: Sandbox, tmp_path: Path, name: str, kind: str
) -> None:
    e = _file(name) if kind == "file" else _link(name, OUT)
    _hostile(box, tmp_path, [e])
    assert stat.S_ISDIR(os.lstat(box.target).st_mode)


# ------------------------------------------------------------------------------------------
# Corrupt, truncated and mismatched input
# ------------------------------------------------------------------------------------------


@functools.cache
def _sample_tar() -> bytes:
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(64 * 1024))
    text = b"".join(b"line %d of a fairly compressible file\n" % i for i in range(4000))
    return layer_tar([_dir("d"), _file("d/rand", data), _file("d/text", text)])


def _layer_error(
    tmp_path: Path, blob: bytes, *, digest: str | None = None, diff_id: str | None = None
) -> str:
    (tmp_path / "layer.blob").write_bytes(blob)
    (tmp_path / "target").mkdir(exist_ok=True)
    with pytest.raises(_core.LayerError) as ei:
        _core.extract_layer(
            str(tmp_path / "layer.blob"),
            str(tmp_path / "target"),
            expect_digest=digest,
            expect_diff_id=diff_id,
        )
    return assert_one_line(ei.value)


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_stream_is_a_layer_error(tmp_path: Path, comp: Compression, keep: float) -> None:
    blob = compress(_sample_tar(), comp)
    _layer_error(tmp_path, blob[: int(len(blob) * keep)])


@pytest.mark.parametrize("cut", [1, 4, 8])
def test_gzip_missing_trailer_is_a_layer_error(tmp_path: Path, cut: int) -> None:
    """The CRC32/ISIZE trailer is only seen when the decoder is drained to its end."""
    _layer_error(tmp_path, compress(_sample_tar(), "gzip")[:-cut])


def test_gzip_corrupt_middle_is_a_layer_error(tmp_path: Path) -> None:
    blob = bytearray(compress(_sample_tar(), "gzip"))
    mid = len(blob) // 2
    for i in range(mid, mid + 16):
        blob[i] ^= 0xA5
    _layer_error(tmp_path, bytes(blob))


def test_gzip_wrong_crc_is_a_layer_error(tmp_path: Path) -> None:
    blob = bytearray(compress(_sample_tar(), "gzip"))
    blob[-8] ^= 0xFF  # first CRC32 byte
    _layer_error(tmp_path, bytes(blob))


def test_zstd_corrupt_middle_is_a_layer_error(tmp_path: Path) -> None:
    blob = bytearray(compress(_sample_tar(), "zstd"))
    mid = len(blob) // 2
    for i in range(mid, mid + 16):
        blob[i] ^= 0xA5
    _layer_error(tmp_path, bytes(blob))


@pytest.mark.parametrize("magic", [b"", b"\x1f\x8b", b"\x28\xb5\x2f\xfd"])
def test_random_garbage_is_a_layer_error(tmp_path: Path, magic: bytes) -> None:
    rng = random.Random(len(magic))
    _layer_error(tmp_path, magic + bytes(rng.randrange(256) for _ in range(8192)))


def test_truncated_tar_header_is_a_layer_error(tmp_path: Path) -> None:
    _layer_error(tmp_path, _sample_tar()[:300])


def test_expect_digest_mismatch_is_a_layer_error(tmp_path: Path) -> None:
    blob = compress(_sample_tar(), "gzip")
    msg = _layer_error(tmp_path, blob, digest="sha256:" + "0" * 64)
    assert "digest" in msg.lower() or sha256(blob) in msg


def test_expect_diff_id_mismatch_is_a_layer_error(tmp_path: Path) -> None:
    blob = compress(_sample_tar(), "zstd")
    msg = _layer_error(tmp_path, blob, diff_id="sha256:" + "f" * 64)
    assert "diff" in msg.lower() or "digest" in msg.lower()


def test_expected_digests_that_match_are_accepted(tmp_path: Path) -> None:
    tar = _sample_tar()
    blob = compress(tar, "gzip")
    res, t = _extract(tmp_path, blob, expect_digest=sha256(blob), expect_diff_id=sha256(tar))
    assert res["digest"] == sha256(blob)
    assert (t / "d" / "text").is_file()


# ------------------------------------------------------------------------------------------
# Sources: byte ranges, fds, blob_out, results
# ------------------------------------------------------------------------------------------


def test_result_fields(tmp_path: Path) -> None:
    tar = _sample_tar()
    blob = compress(tar, "gzip")
    res, _ = _extract(tmp_path, blob)
    assert set(res) == {
        "digest", "diff_id", "size", "uncompressed_size", "compression", "entries", "warnings",
    }  # fmt: skip
    assert res == {
        "digest": sha256(blob),
        "diff_id": sha256(tar),
        "size": len(blob),
        "uncompressed_size": len(tar),
        "compression": "gzip",
        "entries": 3,
        "warnings": res["warnings"],
    }
    if os.geteuid() == 0:  # unprivileged, chown to 0 is skipped with a warning
        assert res["warnings"] == []


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_offset_and_length_read_a_layer_inside_a_bigger_file(
    tmp_path: Path, comp: Compression
) -> None:
    tar = _sample_tar()
    blob = compress(tar, comp)
    big = tmp_path / "big"
    big.write_bytes(b"J" * 1000 + blob + b"\x1f\x8bjunk after" * 50)
    (tmp_path / "t").mkdir()
    res = _core.extract_layer(
        str(big),
        str(tmp_path / "t"),
        offset=1000,
        length=len(blob),
        blob_out=str(tmp_path / "copy"),
    )
    assert res["digest"] == sha256(blob)
    assert res["diff_id"] == sha256(tar)
    assert res["size"] == len(blob)
    assert res["compression"] == comp
    assert (tmp_path / "copy").read_bytes() == blob
    assert (tmp_path / "t" / "d" / "text").read_bytes().startswith(b"line 0 of")


def test_fd_source(tmp_path: Path) -> None:
    tar = _sample_tar()
    blob = compress(tar, "zstd")
    (tmp_path / "blob").write_bytes(blob)
    (tmp_path / "t").mkdir()
    fd = os.open(tmp_path / "blob", os.O_RDONLY)
    try:
        res = _core.extract_layer(fd, str(tmp_path / "t"))
        os.fstat(fd)  # the caller still owns the fd
    finally:
        os.close(fd)
    assert res["digest"] == sha256(blob)
    assert res["diff_id"] == sha256(tar)
    assert (tmp_path / "t" / "d" / "rand").stat().st_size == 64 * 1024


def test_fd_source_with_offset_and_length(tmp_path: Path) -> None:
    blob = compress(_sample_tar(), "gzip")
    (tmp_path / "big").write_bytes(b"\0" * 4096 + blob + b"\0" * 100)
    (tmp_path / "t").mkdir()
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    try:
        res = _core.extract_layer(fd, str(tmp_path / "t"), offset=4096, length=len(blob))
    finally:
        os.close(fd)
    assert res["digest"] == sha256(blob)


@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_blob_out_gets_exactly_the_raw_bytes(tmp_path: Path, comp: Compression) -> None:
    blob = compress(_sample_tar(), comp)
    res, _ = _extract(tmp_path, blob, blob_out=str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == blob
    assert res["digest"] == sha256(blob)


# ------------------------------------------------------------------------------------------
# Entry kinds and metadata
# ------------------------------------------------------------------------------------------


@needs_root
def test_char_and_block_devices_and_fifos_are_created(tmp_path: Path) -> None:
    entries = [
        _dir("dev"),
        Entry("dev/null", "chardev", mode=0o666, dev=(1, 3)),
        Entry("dev/loop0", "blockdev", mode=0o660, gid=6, dev=(7, 0)),
        Entry("dev/fifo", "fifo", mode=0o620),
    ]
    res, t = _extract(tmp_path, layer_tar(entries))
    assert isinstance(res["warnings"], list)
    assert res["warnings"] == []
    s = os.lstat(t / "dev" / "null")
    assert stat.S_ISCHR(s.st_mode)
    assert (os.major(s.st_rdev), os.minor(s.st_rdev)) == (1, 3)
    assert stat.S_IMODE(s.st_mode) == 0o666
    s = os.lstat(t / "dev" / "loop0")
    assert stat.S_ISBLK(s.st_mode)
    assert (os.major(s.st_rdev), os.minor(s.st_rdev), s.st_gid) == (7, 0, 6)
    s = os.lstat(t / "dev" / "fifo")
    assert stat.S_ISFIFO(s.st_mode)
    assert stat.S_IMODE(s.st_mode) == 0o620


@needs_root
def test_setuid_owner_and_mtime_survive_chown(tmp_path: Path) -> None:
    entries = [
        _dir("bin", mode=0o700, uid=1000, gid=1000, mtime=1_000_000_000),
        _file("bin/su", b"#!", mode=0o4755, uid=0, gid=0, mtime=1_234_567_890),
        _file("bin/own", b"x", mode=0o6750, uid=1000, gid=65534, mtime=7),
        Entry("tmp", "dir", mode=0o1777),
        Entry("l", "symlink", target="bin/own", mode=0o777, uid=65534, gid=65534),
    ]
    _, t = _extract(tmp_path, layer_tar(entries))
    tree = snapshot(t).nodes
    assert (tree["bin/su"].mode, tree["bin/su"].uid, tree["bin/su"].mtime) == (
        0o4755, 0, 1_234_567_890,
    )  # fmt: skip
    assert (tree["bin/own"].mode, tree["bin/own"].uid, tree["bin/own"].gid) == (0o6750, 1000, 65534)
    assert tree["bin/own"].mtime == 7
    assert (tree["bin"].mode, tree["bin"].uid) == (0o700, 1000)
    assert tree["tmp"].mode == 0o1777
    assert (tree["l"].kind, tree["l"].uid, tree["l"].content) == ("symlink", 65534, "bin/own")


def test_hardlinks_share_an_inode(tmp_path: Path) -> None:
    _, t = _extract(
        tmp_path,
        layer_tar([_dir("a"), _file("a/f", b"same", mode=0o600), _hard("a/g", "a/f"),
                   _hard("h", "a/f")]),
    )  # fmt: skip
    assert snapshot(t).links == {frozenset({"a/f", "a/g", "h"})}
    assert os.stat(t / "h").st_nlink == 3


def test_missing_parent_dirs_are_created(tmp_path: Path) -> None:
    _, t = _extract(tmp_path, layer_tar([_file("x/y/z", b"deep")]))
    assert (t / "x" / "y" / "z").read_bytes() == b"deep"


@pytest.mark.parametrize("length", [150, 300, 1000])
def test_long_pax_names_and_link_targets(tmp_path: Path, length: int) -> None:
    comps: list[str] = []
    while len("/".join(comps)) < length:
        comps.append(chr(ord("a") + len(comps) % 26) * 99)
    dirs = ["/".join(comps[:i]) for i in range(1, len(comps))]
    name = "/".join(comps)
    target = "../" * (len(comps) - 1) + name
    assert len(name) >= length
    assert len(target) > 100
    entries = [
        *(_dir(d) for d in dirs),
        _file(name, b"long"),
        _link(name + "-sl", target),
        _hard(name + "-hl", name),
    ]
    _, t = _extract(tmp_path, layer_tar(entries))
    assert (t / name).read_bytes() == b"long"
    assert os.readlink(t / (name + "-sl")) == target
    assert (t / (name + "-sl")).read_bytes() == b"long"
    assert os.stat(t / (name + "-hl")).st_ino == os.stat(t / name).st_ino


@pytest.mark.parametrize("uid", [0, 1000])
@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
@needs_root
def test_security_capability_xattr_round_trip(
    tmp_path: Path, uid: int, whiteouts: Whiteouts
) -> None:
    """Set after chown (which clears file capabilities) and after the data is written."""
    tar = raw_tar(
        raw_member("bin/", b"5", mode=0o755),
        raw_member(
            "bin/ping",
            b"0",
            b"\x7fELF...",
            mode=0o755,
            uid=uid,
            gid=uid,
            pax={"SCHILY.xattr.security.capability": CAP_V2_NET_BIND},
        ),
    )
    _, t = _extract(tmp_path, tar, whiteouts=whiteouts)
    assert os.getxattr(t / "bin" / "ping", "security.capability") == CAP_V2_NET_BIND
    assert (t / "bin" / "ping").read_bytes() == b"\x7fELF..."
    assert os.stat(t / "bin" / "ping").st_uid == uid


@pytest.mark.parametrize(
    "key",
    [
        "trusted.overlay.opaque",
        "trusted.overlay.redirect",
        "trusted.overlay.origin",
        # what overlayfs reads instead when mounted with userxattr (rootless)
        "user.overlay.opaque",
        "user.overlay.redirect",
    ],
)
@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
@needs_root
def test_layer_cannot_set_overlay_xattrs(tmp_path: Path, key: str, whiteouts: Whiteouts) -> None:
    tar = raw_tar(
        raw_member("d/", b"5", mode=0o755, pax={f"SCHILY.xattr.{key}": b"y"}),
        raw_member("d/f", b"0", b"f", pax={f"SCHILY.xattr.{key}": b"y"}),
    )
    try:
        _, t = _extract(tmp_path, tar, whiteouts=whiteouts)
    except _core.LayerError as e:  # refusing the layer is fine too
        assert_one_line(e)
        return
    for p in (t / "d", t / "d" / "f"):
        with pytest.raises(OSError) as ei:
            os.getxattr(p, key)
        assert ei.value.errno == errno.ENODATA


# ------------------------------------------------------------------------------------------
# Whiteouts
# ------------------------------------------------------------------------------------------


@needs_root
def test_overlay_whiteout_becomes_char_device_0_0(tmp_path: Path) -> None:
    tar = layer_tar([_file(".wh.top", b""), _dir("d"), _file("d/.wh.x", b""), _file("d/y")])
    _, t = _extract(tmp_path, tar)
    for p in (t / "top", t / "d" / "x"):
        s = os.lstat(p)
        assert stat.S_ISCHR(s.st_mode), p
        assert s.st_rdev == os.makedev(0, 0)
    names = {p.name for p in t.rglob("*")}
    assert not any(n.startswith(".wh.") for n in names), names
    assert (t / "d" / "y").read_bytes() == b"data"


@needs_root
def test_overlay_opaque_marker_becomes_xattr(tmp_path: Path) -> None:
    tar = layer_tar([_dir("d"), _file("d/keep"), _file(f"d/{OPQ}", b""), _dir("d/sub")])
    _, t = _extract(tmp_path, tar)
    assert os.getxattr(t / "d", "trusted.overlay.opaque") == b"y"
    assert not os.path.lexists(t / "d" / OPQ)
    assert sorted(os.listdir(t / "d")) == ["keep", "sub"]
    with pytest.raises(OSError):
        os.getxattr(t / "d" / "sub", "trusted.overlay.opaque")


@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
def test_aufs_hardlink_dir_is_skipped(tmp_path: Path, whiteouts: Whiteouts) -> None:
    tar = layer_tar([_dir(".wh..wh.plnk"), _file(".wh..wh.plnk/123.456", b"x"), _file("f", b"f")])
    _, t = _extract(tmp_path, tar, whiteouts=whiteouts)
    assert sorted(os.listdir(t)) == ["f"]


def test_apply_whiteout_deletes_paths(tmp_path: Path) -> None:
    t = tmp_path / "target"
    (t / "d" / "sub").mkdir(parents=True)
    for rel in ("d/x", "d/y", "top", "d/sub/z"):
        (t / rel).write_bytes(b"lower")
    tar = layer_tar([_file(".wh.top", b""), _dir("d"), _file("d/.wh.x", b""),
                     _file("d/.wh.sub", b""), _file("d/.wh.never-existed", b"")])  # fmt: skip
    _extract(tmp_path, tar, dest=t, whiteouts="apply")
    assert sorted(str(p.relative_to(t)) for p in t.rglob("*")) == ["d", "d/y"]


def test_apply_opaque_keeps_siblings_from_the_same_layer(tmp_path: Path) -> None:
    """`.wh..wh..opq` applies before its siblings, wherever it sits in the archive."""
    t = tmp_path / "target"
    (t / "d" / "olddir").mkdir(parents=True)
    (t / "d" / "old").write_bytes(b"lower")
    (t / "d" / "new").write_bytes(b"lower, replaced")
    (t / "other").write_bytes(b"untouched")
    tar = layer_tar([_dir("d"), _file("d/new", b"upper"), _file(f"d/{OPQ}", b""),
                     _file("d/later", b"upper")])  # fmt: skip
    _extract(tmp_path, tar, dest=t, whiteouts="apply")
    assert sorted(os.listdir(t / "d")) == ["later", "new"]
    assert (t / "d" / "new").read_bytes() == b"upper"
    assert (t / "other").read_bytes() == b"untouched"
    with pytest.raises(OSError):
        os.getxattr(t / "d", "trusted.overlay.opaque")


@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
@pytest.mark.parametrize("whiteout_first", [True, False])
def test_whiteout_never_hides_an_entry_of_its_own_layer(
    tmp_path: Path, whiteouts: Whiteouts, whiteout_first: bool
) -> None:
    """OCI layer.md: whiteouts apply only to lower layers; a file of the same layer can only be
    hidden by a later layer, whatever the archive order."""
    t = tmp_path / "target"
    t.mkdir()
    if whiteouts == "apply":
        (t / "x").write_bytes(b"lower")
    pair = [_file(".wh.x", b""), _file("x", b"same layer")]
    _extract(
        tmp_path, layer_tar(pair if whiteout_first else pair[::-1]), dest=t, whiteouts=whiteouts
    )
    assert stat.S_ISREG(os.lstat(t / "x").st_mode)
    assert (t / "x").read_bytes() == b"same layer"


def test_apply_whiteout_of_a_dir_keeps_what_the_same_layer_put_there(tmp_path: Path) -> None:
    t = tmp_path / "target"
    (t / "d").mkdir(parents=True)
    (t / "d" / "old").write_bytes(b"lower")
    tar = layer_tar([_dir("d"), _file("d/new", b"n"), _file(".wh.d", b"")])
    _extract(tmp_path, tar, dest=t, whiteouts="apply")
    assert sorted(os.listdir(t / "d")) == ["new"]


def test_apply_replaces_hardlinked_file_without_writing_through(tmp_path: Path) -> None:
    t = tmp_path / "target"
    t.mkdir()
    (t / "f").write_bytes(b"old")
    os.link(t / "f", t / "g")
    _extract(tmp_path, layer_tar([_file("f", b"new")]), dest=t, whiteouts="apply")
    assert (t / "f").read_bytes() == b"new"
    assert (t / "g").read_bytes() == b"old"


@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
def test_replacing_types_in_existing_dest(tmp_path: Path, whiteouts: Whiteouts) -> None:
    t = tmp_path / "target"
    (t / "was_dir" / "child").mkdir(parents=True)
    (t / "was_file").write_bytes(b"f")
    os.symlink("was_file", t / "was_link")
    tar = layer_tar(
        [_file("was_dir", b"now a file"), _dir("was_file"), _file("was_file/in", b"i"),
         _dir("was_link", mode=0o700), _file("was_link/in", b"j")]
    )  # fmt: skip
    _extract(tmp_path, tar, dest=t, whiteouts=whiteouts)
    assert (t / "was_dir").read_bytes() == b"now a file"
    assert (t / "was_file" / "in").read_bytes() == b"i"
    assert stat.S_ISDIR(os.lstat(t / "was_link").st_mode)
    assert (t / "was_link" / "in").read_bytes() == b"j"
    assert not (t / "in").exists()


# ------------------------------------------------------------------------------------------
# Stream and header variants
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("comp", ["gzip", "zstd"])
def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path, comp: Compression) -> None:
    """pigz-style concatenated gzip members and zstd frames are one stream."""
    tar = _sample_tar()
    mid = len(tar) // 3
    blob = compress(tar[:mid], comp) + compress(tar[mid:], comp)
    res, t = _extract(tmp_path, blob)
    assert res["diff_id"] == sha256(tar)
    assert res["digest"] == sha256(blob)
    assert sorted(os.listdir(t / "d")) == ["rand", "text"]


@pytest.mark.parametrize("trailer", [b"\0" * 5000, b"not a tar block, after the end" * 30])
def test_bytes_after_end_of_archive_are_hashed(tmp_path: Path, trailer: bytes) -> None:
    tar = _sample_tar() + trailer
    res, _ = _extract(tmp_path, tar)
    assert res["size"] == len(tar)
    assert res["digest"] == res["diff_id"] == sha256(tar)


def test_length_past_end_of_file_is_a_layer_error(tmp_path: Path) -> None:
    tar = _sample_tar()
    (tmp_path / "blob").write_bytes(tar)
    (tmp_path / "t").mkdir()
    with pytest.raises(_core.LayerError) as ei:
        _core.extract_layer(str(tmp_path / "blob"), str(tmp_path / "t"), length=len(tar) + 1)
    assert_one_line(ei.value)


def test_missing_source_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        _core.extract_layer(str(tmp_path / "missing"), str(tmp_path))


def test_error_message_with_a_newline_in_the_name_is_one_line(tmp_path: Path) -> None:
    msg = _layer_error(tmp_path, layer_tar([_file("../x\nINJECTED line", b"z")]))
    assert "escapes" in msg


def test_non_utf8_names_are_kept_byte_for_byte(tmp_path: Path) -> None:
    name = b"caf\xe9-\xff".decode("utf-8", "surrogateescape")
    _, t = _extract(tmp_path, layer_tar([_file(name, b"n"), _link("l", name)]))
    assert sorted(os.listdir(bytes(t))) == [b"caf\xe9-\xff", b"l"]
    assert os.readlink(bytes(t / "l")) == b"caf\xe9-\xff"


@needs_root
def test_uids_beyond_the_octal_field_via_pax(tmp_path: Path) -> None:
    _, t = _extract(tmp_path, layer_tar([_file("f", b"z", uid=3_000_000_000, gid=2_500_000)]))
    s = os.stat(t / "f")
    assert (s.st_uid, s.st_gid) == (3_000_000_000, 2_500_000)


def test_gnu_long_names_and_link_targets(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("x" * 150)
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"q"))
        ti = tarfile.TarInfo("l")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "t" * 200
        tf.addfile(ti)
    _, t = _extract(tmp_path, buf.getvalue())
    assert (t / ("x" * 150)).read_bytes() == b"q"
    assert os.readlink(t / "l") == "t" * 200


def test_gnu_long_name_escape_is_rejected(box: Sandbox, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("../outside/" + "y" * 150)
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"q"))
    (tmp_path / "gnu.tar").write_bytes(buf.getvalue())
    before = box.snapshot()
    with pytest.raises(_core.LayerError, match="escapes"):
        _core.extract_layer(str(tmp_path / "gnu.tar"), str(box.target))
    assert box.snapshot() == before


@pytest.mark.parametrize("whiteouts", ["overlay", "apply"])
def test_directory_and_symlink_mtimes_are_set_after_children(
    tmp_path: Path, whiteouts: Whiteouts
) -> None:
    entries = [
        _dir("d", mtime=1000),
        _file("d/f", b"1", mtime=2000),
        Entry("d/l", "symlink", target="f", mode=0o777, mtime=3000),
        _dir("d/e", mtime=4000),
        _file("d/e/g", b"2", mtime=5000),
    ]
    _, t = _extract(tmp_path, layer_tar(entries), whiteouts=whiteouts)
    got = {p: int(os.lstat(t / p).st_mtime) for p in ("d", "d/f", "d/l", "d/e", "d/e/g")}
    assert got == {"d": 1000, "d/f": 2000, "d/l": 3000, "d/e": 4000, "d/e/g": 5000}


def test_pax_fractional_mtime(tmp_path: Path) -> None:
    tar = raw_tar(raw_member("f", b"0", b"x", pax={"mtime": b"1234567890.5"}))
    _, t = _extract(tmp_path, tar)
    assert os.stat(t / "f").st_mtime_ns == 1_234_567_890_500_000_000


def test_unknown_whiteouts_mode_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whiteouts"):
        _extract(tmp_path, layer_tar([_file("f")]), whiteouts="bogus")
