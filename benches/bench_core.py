"""pytest-benchmark benchmarks of pyrun's own hot paths: extract_layer (the busybox rootfs, plain,
gzip and zstd), create_layer (a small generated tree), sha256_file (32 MiB) and sha256_files, an
image import through the Python API, config.json generation (build_spec) and a container start
from a warm Python process (Client.containers.run of busybox, remove=True, no network).

CI runs them once each as plain tests (pytest's addopts has --benchmark-disable), which checks
that they still work and that their results are right. To time them:

    .venv/bin/python -m pytest benches/bench_core.py --benchmark-enable

Each round gets a fresh destination (a new directory or store root), made by the benchmark's
setup function outside the timing.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyrun import _core
from pyrun.client import Client

MiB = 1 << 20
needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: extraction sets owners from the tar and creates device nodes",
)
Setup = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _fresh_dirs(parent: Path, prefix: str) -> Callable[[], Path]:
    """A factory of new, distinct paths under `parent` (not created)."""
    counter = itertools.count()
    return lambda: parent / f"{prefix}{next(counter)}"


@pytest.fixture(scope="module")
def busybox_layer(
    request: pytest.FixtureRequest, busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The busybox rootfs tar compressed as the test asks (gzip -6 / zstd -3) or plain."""
    compression: str = request.param
    if compression == "none":
        return busybox_tar, compression
    out = tmp_path_factory.mktemp("layers") / f"busybox.tar.{compression}"
    if compression == "gzip":
        with open(busybox_tar, "rb") as src, gzip.open(out, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, MiB)
    else:
        zstd = shutil.which("zstd")
        if zstd is None:
            pytest.skip("needs the zstd command to make the .tar.zst (ci/install-deps.sh)")
        subprocess.run([zstd, "-q", "-3", "-o", str(out), str(busybox_tar)], check=True)
    return out, compression


@needs_root
@pytest.mark.parametrize("busybox_layer", ["none", "gzip", "zstd"], indirect=True)
def test_extract_layer_busybox(
    benchmark: Any, busybox_layer: tuple[Path, str], busybox_tar: Path, tmp_path: Path
) -> None:
    layer, compression = busybox_layer
    new_dir = _fresh_dirs(tmp_path, "rootfs")

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        dest = new_dir()
        dest.mkdir()
        return (str(layer), str(dest)), {}

    res = benchmark.pedantic(_core.extract_layer, setup=setup, rounds=10, warmup_rounds=1)
    assert res["compression"] == compression
    assert res["digest"] == _sha256(layer)
    assert res["diff_id"] == _sha256(busybox_tar)
    assert res["uncompressed_size"] == busybox_tar.stat().st_size
    with tarfile.open(busybox_tar) as tf:
        assert res["entries"] == len(tf.getmembers())
    assert (tmp_path / "rootfs0" / "bin" / "busybox").is_file()


def _make_tree(root: Path) -> int:
    """A small rootfs-like tree: 12 directories of 30 files (0 B to 64 KiB, some executable),
    a symlink per directory and one hard link. Returns the number of entries under root."""
    count = 0
    for d in range(12):
        sub = root / f"dir{d:02}" / "sub"
        sub.mkdir(parents=True)
        count += 2
        for f in range(30):
            path = sub / f"file{f:02}"
            size = (f * 2237 + d * 613) % (64 * 1024)
            path.write_bytes(hashlib.sha256(f"{d}/{f}".encode()).digest() * (size // 32 + 1))
            if f % 7 == 0:
                path.chmod(0o755)
            count += 1
        (root / f"dir{d:02}" / "link").symlink_to("sub/file00")
        count += 1
    os.link(root / "dir00" / "sub" / "file01", root / "dir00" / "hardlink")
    return count + 1


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_create_layer(benchmark: Any, compression: str, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    entries = _make_tree(src)
    new_out = _fresh_dirs(tmp_path, "layer")

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (str(src), str(new_out())), {"compression": compression}

    res = benchmark.pedantic(_core.create_layer, setup=setup, rounds=10, warmup_rounds=1)
    out = tmp_path / "layer0"
    assert res["digest"] == _sha256(out)
    assert res["size"] == out.stat().st_size
    assert res["entries"] >= entries
    if compression != "zstd":  # tarfile reads plain and gzip; zstd only from Python 3.14
        with tarfile.open(out) as tf:
            names = {m.name.rstrip("/").removeprefix("./") for m in tf.getmembers()}
        assert {"dir00/hardlink", "dir11/link", "dir05/sub/file29"} <= names


def test_sha256_file_32mib(benchmark: Any, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(4 * MiB) * 8)
    digest = benchmark(_core.sha256_file, str(path))
    assert digest == _sha256(path)


def test_sha256_files_2x16mib(benchmark: Any, tmp_path: Path) -> None:
    paths = [tmp_path / "a", tmp_path / "b"]
    for p in paths:
        p.write_bytes(os.urandom(4 * MiB) * 4)
    digests = benchmark(_core.sha256_files, [str(p) for p in paths])
    assert digests == [_sha256(p) for p in paths]


@needs_root
def test_client_import_busybox(benchmark: Any, busybox_tar: Path, tmp_path: Path) -> None:
    new_root = _fresh_dirs(tmp_path, "store")
    roots: list[Path] = []

    def run(root: Path) -> str:
        return Client(root).images.import_image(busybox_tar, "busybox:bench").id

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        roots.append(new_root())
        return (roots[-1],), {}

    image_id = benchmark.pedantic(run, setup=setup, rounds=5, warmup_rounds=1)
    # The config's "created" differs per import, so the image ID is the last round's.
    image = Client(roots[-1]).images.get("busybox:bench")
    assert image.id == image_id
    assert image.attrs["RootFS"]["Layers"] == [_sha256(busybox_tar)]


@needs_root
def test_build_spec_busybox(benchmark: Any, busybox_tar: Path, tmp_path: Path) -> None:
    """config.json generation for a container with Docker's defaults plus a few user options
    (user lookup in the rootfs, env merge, capabilities, seccomp, mounts, cgroup limits)."""
    from pyrun.runtime.spec import RunOptions, build_spec

    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    _core.extract_layer(str(busybox_tar), str(rootfs))
    image_cfg = {"Env": ["PATH=/bin:/usr/bin"], "Cmd": ["sh"], "WorkingDir": "/"}
    opts = RunOptions(
        command=["sh", "-c", "id"],
        env=["A=1"],
        user="nobody",
        network="none",
        tmpfs=["/scratch"],
        memory="64m",
        pids_limit=100,
        cap_drop=["NET_RAW"],
    )
    spec = benchmark(build_spec, image_cfg, str(rootfs), opts, "c0ffee" * 10 + "beef")
    assert spec["process"]["args"] == ["sh", "-c", "id"]
    assert spec["process"]["user"]["uid"] == 65534
    assert "A=1" in spec["process"]["env"]
    assert "CAP_NET_RAW" not in spec["process"]["capabilities"]["bounding"]
    assert spec["linux"]["resources"]["pids"]["limit"] == 100
    assert any(m["destination"] == "/scratch" for m in spec["mounts"])


@needs_root
def test_client_run_true_warm(benchmark: Any, busybox_tar: Path, tmp_path: Path) -> None:
    """A container start from a warm Python process: Client.containers.run of busybox `true`
    with remove=True and no network (overlay root, cgroup, runtime, clean-up)."""
    client = Client(tmp_path / "store")
    client.images.import_image(busybox_tar, "busybox:bench")

    def run() -> bytes:
        out: bytes = client.containers.run(
            "busybox:bench", ["sh", "-c", "echo up"], remove=True, network_mode="none"
        )
        return out

    out = benchmark.pedantic(run, rounds=10, warmup_rounds=1)
    assert out == b"up\n"
    assert client.containers.list(all=True) == []
