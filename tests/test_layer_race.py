"""Extraction racing a concurrent attacker: while a layer is being unpacked, another thread keeps
swapping a directory of the target for a symlink to a directory outside it. Whatever the
interleaving, nothing outside the target is created or changed (the kernel resolves every
parent with RESOLVE_IN_ROOT, so a swapped-in symlink cannot lead out)."""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from helpers import needs_root
from pyrun import _core


def layer_with_many_files(path: Path, n: int = 3000) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("a")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        for i in range(n):
            ti = tarfile.TarInfo(f"a/sub{i % 7}/f{i}")
            ti.size = 3
            tf.addfile(ti, io.BytesIO(b"pwn"))
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, data)
    return out


@needs_root
@pytest.mark.parametrize("seed", range(3))
def test_swapping_a_parent_for_a_symlink_never_escapes(tmp_path: Path, seed: int) -> None:
    layer = layer_with_many_files(tmp_path / "layer.tar")
    outside = tmp_path / "outside"
    (outside / "sub0").mkdir(parents=True)
    (outside / "keep").write_text("sentinel")
    before = snapshot(outside)
    swaps = 0
    # The racer only swaps once the layer has created `a`; an extraction can finish first, so
    # run rounds (fresh targets) until at least one swap happened during an extraction.
    for round_no in range(10):
        target = tmp_path / f"target{round_no}"
        target.mkdir()
        stop = threading.Event()

        def racer(target: Path = target, stop: threading.Event = stop) -> None:
            nonlocal swaps
            a, hidden = target / "a", target / "a.real"
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    os.rename(a, hidden)
                    os.symlink(outside, a)  # absolute path to a real host directory
                    swaps += 1
                    os.unlink(a)
                    os.rename(hidden, a)

        t = threading.Thread(target=racer)
        t.start()
        try:
            with contextlib.suppress(_core.LayerError, OSError):
                _core.extract_layer(str(layer), str(target))
        finally:
            stop.set()
            t.join()
        assert snapshot(outside) == before
        if swaps > 0:
            break
    assert swaps > 0, "the racer never swapped: the test raced nothing"
