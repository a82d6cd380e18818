"""The comparison's VM baseline (benches/vm.py) and plots (benches/plots.py) in a reduced mode: the
initramfs is a valid newc archive, the VM boots once to power-off, and the plots come out of a
small result set as valid PNGs that show every engine, the VM's line and the rows that did not
run."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

import plots
import vm

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _newc_members(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, rdev) of a newc cpio archive, checking its framing."""
    out: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name_at = pos + 110
        name = data[name_at : name_at + namesize - 1].decode()
        assert data[name_at + namesize - 1] == 0
        body = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data[body : body + size], (rmaj, rmin))
        pos = body + size + (-size % 4)


def test_initramfs_is_newc_with_init_and_busybox(tmp_path: Path, busybox_tar: Path) -> None:
    path = vm.initramfs(tmp_path, busybox_tar)
    members = _newc_members(gzip.decompress(path.read_bytes()))
    assert set(members) == {"bin", "dev", "dev/console", "bin/busybox", "init"}
    mode, init, _ = members["init"]
    assert mode & 0o111 and init == vm.INIT
    assert members["bin/busybox"][1][:4] == b"\x7fELF"
    assert members["dev/console"][2] == (5, 1)
    assert vm.initramfs(tmp_path, busybox_tar) == path  # cached under its content's hash


def test_vm_boots_once_to_power_off(busybox_tar: Path) -> None:
    if shutil.which(vm.QEMU) is None:
        pytest.skip(f"{vm.QEMU} not installed ({vm.INSTALL_HINT})")
    try:
        assets = vm.assets(busybox_tar)
    except vm.VmUnavailable as e:
        pytest.skip(f"no kernel for the VM: {e}")
    assert assets.kernel.stat().st_size > 1 << 20
    assert assets.kernel_package.startswith("linux-image-")
    # TCG runs wherever qemu does; compare.py's reduced run covers the KVM probe.
    result = vm.boot(assets, "tcg")
    assert result.guest_seconds is not None and 0 < result.guest_seconds < result.seconds


def _row(cap: str, case: str, tool: str, role: str, samples: list[float]) -> dict[str, Any]:
    ok = bool(samples)
    med = sorted(samples)[len(samples) // 2] if ok else None
    return {
        "capability": cap,
        "case": case,
        "tool": tool,
        "timing": "CLI",
        "role": role,
        "note": "",
        "status": "ok" if ok else "not available",
        "reason": None if ok else f"{tool} not found in PATH",
        "samples_s": samples,
        "median_s": med,
        "min_s": min(samples) if ok else None,
        "max_s": max(samples) if ok else None,
        "ratio_peer_over_pyrun": None if role != "peer" or not ok else 2.0,
    }


def _results() -> dict[str, Any]:
    start = "busybox `true`, start to exit"
    bridge = "busybox `true` on the default bridge"
    rows = [
        _row("start", start, "pyrun run --rm", "pyrun", [0.06, 0.065, 0.07]),
        _row("start", start, "runc run", "peer", [0.02, 0.019, 0.021]),
        _row("start", start, "crun run", "peer", []),
        _row("bridge", bridge, "pyrun run --rm", "pyrun", [0.08, 0.09, 0.1]),
        _row("vm", "boot", "pyrun run --rm", "pyrun", [0.06]),
        _row("vm", "boot", "qemu-system-x86_64 -accel tcg", "peer", [2.5]),
        _row("pull", "debian image", "pyrun pull", "pyrun", [0.7, 0.72]),
        _row("pull", "debian image", "docker pull", "peer", [2.7, 2.8]),
        _row("build", "hello, cold build", "pyrun build", "pyrun", [0.1, 0.11]),
        _row("build", "hello, cold build", "buildah bud", "peer", []),
    ]
    machine = {"cpu": "Test CPU", "cores": "2 online", "kernel": "6.1", "cgroup": "x -> v2"}
    return {"date": "2026-12-05 01:00 UTC", "quick": True, "machine": machine, "rows": rows}


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, checking its signature and every chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plots_from_a_small_result_set(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extras")
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    assert plots.main([str(tmp_path)]) == 0
    start, pull_build = tmp_path / plots.START_PNG, tmp_path / plots.PULL_BUILD_PNG
    w, h = _png_size(start)
    assert w > 600 and h > 250
    w, h = _png_size(pull_build)
    assert w > 600 and h > 250
    assert not list(tmp_path.glob(".*.png")), "a temporary PNG was left behind"


def test_plot_start_draws_every_engine_and_the_vm(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extras")
    import matplotlib.pyplot as plt

    drawn: dict[str, Any] = {}
    close = plt.close

    def keep(fig: Any = None) -> None:  # look at the figure before it is closed
        drawn["texts"] = [t.get_text() for ax in fig.axes for t in ax.texts]
        drawn["labels"] = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        close(fig)

    plt.close = keep
    try:
        assert plots.plot_start(_results(), tmp_path / "s.png") == tmp_path / "s.png"
    finally:
        plt.close = close
    assert drawn["labels"] == [  # top to bottom: --network none first, then the bridge
        "pyrun run --rm · none",
        "runc run · none",
        "crun run · none",
        "pyrun run --rm · bridge",
    ]
    texts = " ".join(drawn["texts"])
    assert "not available: crun run not found in PATH" in texts
    assert "VM boot to power-off, qemu TCG: 2.50 s" in texts


def test_plots_skip_what_has_no_rows(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extras")
    doc = _results()
    doc["rows"] = [r for r in doc["rows"] if r["capability"] in ("start", "vm")]
    assert plots.make_plots(doc, tmp_path) == [tmp_path / plots.START_PNG]
