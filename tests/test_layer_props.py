"""Property tests of the Rust layer engine against the reference model in layergen: overlay
views of extracted stacks, flattening with whiteouts="apply", digests, create/extract round
trips, and confinement of hostile layers."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layergen import (
    COMPRESSIONS,
    Compression,
    Layer,
    assert_one_line,
    compress,
    decompress,
    hostile_stacks,
    layer_stacks,
    layer_tar,
    make_sandbox,
    model_tree,
    overlay_view,
    sha256,
    snapshot,
)
from pyrun import _core

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: chown to other uids, setuid bits, whiteout devices, trusted.* xattrs",
    ),
]

# PYRUN_PROP_EXAMPLES raises the count for a longer bug hunt; 60 keeps the module under a minute.
PROPS = settings(
    max_examples=int(os.environ.get("PYRUN_PROP_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

compressions = st.lists(st.sampled_from(COMPRESSIONS), min_size=4, max_size=4)


def _members(tar: bytes, *, whiteouts: bool = True) -> int:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        names = [os.path.basename(m.name) for m in tf.getmembers()]
    return sum(1 for n in names if whiteouts or not n.startswith(".wh."))


def _check_extract_result(res: _core.ExtractResult, blob: bytes, comp: Compression) -> None:
    tar = decompress(blob)
    assert res["digest"] == sha256(blob)
    assert res["diff_id"] == sha256(tar)
    assert res["size"] == len(blob)
    assert res["uncompressed_size"] == len(tar)
    assert res["compression"] == comp
    assert res["entries"] == _members(tar, whiteouts=False)  # entries created; whiteouts aside
    assert isinstance(res["warnings"], list)


def _write_blobs(stack: list[Layer], comps: list[Compression], tmp: Path) -> list[Path]:
    paths = []
    for i, layer in enumerate(stack):
        p = tmp / f"blob{i}"
        p.write_bytes(compress(layer_tar(layer), comps[i]))
        paths.append(p)
    return paths


@PROPS
@given(stack=layer_stacks(), comps=compressions)
def test_overlay_of_extracted_layers_equals_model(
    stack: list[Layer], comps: list[Compression]
) -> None:
    """Each layer extracted alone (overlay whiteouts), the stack mounted as overlay lowerdirs
    (topmost first), shows the tree the model builds: paths, types, bytes, symlink targets,
    modes with setuid bits, owners, file mtimes, hardlink groups."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        expected = snapshot(model_tree([layer_tar(la) for la in stack], tmp / "model"))
        dirs = []
        for i, blob in enumerate(_write_blobs(stack, comps, tmp)):
            dest = tmp / f"layer{i}"
            dest.mkdir()
            res = _core.extract_layer(str(blob), str(dest))
            _check_extract_result(res, blob.read_bytes(), comps[i])
            dirs.append(dest)
        with overlay_view(dirs, tmp / "mnt") as mnt:
            got = snapshot(mnt)
        assert got == expected


@PROPS
@given(stack=layer_stacks(), comps=compressions)
def test_apply_whiteouts_into_one_dir_equals_model(
    stack: list[Layer], comps: list[Compression]
) -> None:
    """whiteouts="apply", every layer in order into one directory: the flattened tree equals the
    model (replacing files by dirs and back, symlinks by dirs, honouring opaque markers that
    follow their siblings, never writing through a hardlink of a replaced file)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        expected = snapshot(model_tree([layer_tar(la) for la in stack], tmp / "model"))
        flat = tmp / "flat"
        flat.mkdir()
        for blob in _write_blobs(stack, comps, tmp):
            _core.extract_layer(str(blob), str(flat), whiteouts="apply")
        assert snapshot(flat) == expected


@PROPS
@given(
    stack=layer_stacks(max_layers=1),
    comp=st.sampled_from(COMPRESSIONS),
    level=st.sampled_from([1, 3, 9]),
)
def test_digest_and_diff_id_equal_hashlib(
    stack: list[Layer], comp: Compression, level: int
) -> None:
    """digest covers the blob as read, diff_id the uncompressed tar; blob_out is a byte-exact
    copy; expect_digest/expect_diff_id with the right values are accepted."""
    tar = layer_tar(stack[0])
    blob = compress(tar, comp, level)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "blob").write_bytes(blob)
        (tmp / "out").mkdir()
        res = _core.extract_layer(
            str(tmp / "blob"),
            str(tmp / "out"),
            blob_out=str(tmp / "copy"),
            expect_digest=sha256(blob),
            expect_diff_id=sha256(tar),
        )
        _check_extract_result(res, blob, comp)
        assert (tmp / "copy").read_bytes() == blob
        assert _core.sha256_file(str(tmp / "blob")) == sha256(blob)


@PROPS
@given(stack=layer_stacks(), comp=st.sampled_from(COMPRESSIONS))
def test_create_then_extract_reproduces_tree(stack: list[Layer], comp: Compression) -> None:
    """create_layer of a tree, extracted again, gives the same tree; two runs give the same
    bytes and results, and the results match hashlib."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = model_tree([layer_tar(la) for la in stack], tmp / "src")
        r1 = _core.create_layer(str(src), str(tmp / "l1"), compression=comp)
        r2 = _core.create_layer(str(src), str(tmp / "l2"), compression=comp)
        blob = (tmp / "l1").read_bytes()
        assert (tmp / "l2").read_bytes() == blob
        assert r1 == r2
        tar = decompress(blob)
        assert _core.detect_compression(blob[:16]) == comp
        assert r1["digest"] == sha256(blob)
        assert r1["diff_id"] == sha256(tar)
        assert r1["size"] == len(blob)
        assert r1["uncompressed_size"] == len(tar)
        assert r1["entries"] == _members(tar)
        dst = tmp / "dst"
        dst.mkdir()
        res = _core.extract_layer(str(tmp / "l1"), str(dst), whiteouts="apply")
        assert res["diff_id"] == r1["diff_id"]
        assert snapshot(dst) == snapshot(src)


@PROPS
@given(stack=layer_stacks(varied_mtimes=True), epoch=st.integers(0, 4_000_000_000))
def test_create_clamps_mtimes_to_source_date_epoch(stack: list[Layer], epoch: int) -> None:
    """With source_date_epoch, every member's mtime is min(mtime on disk, epoch)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = model_tree([layer_tar(la) for la in stack], tmp / "src")
        on_disk = {str(p.relative_to(src)): int(os.lstat(p).st_mtime) for p in src.rglob("*")}
        _core.create_layer(str(src), str(tmp / "out"), compression="none", source_date_epoch=epoch)
        with tarfile.open(tmp / "out") as tf:
            members = {m.name.removeprefix("./").rstrip("/"): m.mtime for m in tf.getmembers()}
        members.pop("", None)
        members.pop(".", None)
        assert set(members) == set(on_disk)
        assert members == {k: min(v, epoch) for k, v in on_disk.items()}


@PROPS
@given(stack=hostile_stacks(), whiteouts=st.sampled_from(["overlay", "apply"]))
def test_hostile_layers_never_touch_anything_outside_target(
    stack: list[Layer], whiteouts: str
) -> None:
    """Layers with `..` names, absolute names, symlinks out of the tree and entries through
    them, hardlinks out of the tree, escaping whiteouts: extracted in order into root/target,
    they leave every other path (bytes, modes, owners, link counts, mtimes, ctimes) as it was,
    and extract_layer raises nothing but LayerError (with a one-line message)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "blobs").mkdir()
        box = make_sandbox(tmp / "box")
        blobs = []
        for i, layer in enumerate(stack):
            p = tmp / "blobs" / f"blob{i}"
            p.write_bytes(layer_tar(layer, outside=str(box.outside)))
            blobs.append(p)
        before = box.snapshot()
        for p in blobs:
            try:
                _core.extract_layer(str(p), str(box.target), whiteouts=whiteouts)  # type: ignore[arg-type]
            except _core.LayerError as e:
                assert_one_line(e)
        assert box.snapshot() == before
        assert not os.path.lexists("/pyrun-evil")
