"""pyrun against its peers, side by side, in one run.

    .venv/bin/python benches/compare.py [--quick] [--out DIR]
                                        [--only extract,sha256,import,start,oci,bridge,vm,scale,pull,push,build]
                                        [--vm-accel auto|kvm|tcg]

Capabilities and contenders (the first of each case is the baseline of its ratios):

    extract   a rootfs layer: pyrun._core.extract_layer (in-process) vs GNU tar and, for .tar.gz
              and .tar.zst, `umoci unpack` from an OCI layout written once before timing (CLI;
              zstd is probed once, untimed: umoci 0.4.7 knows only gzip layers, its row says so)
    sha256    a 1 GiB blob: pyrun._core.sha256_file vs `openssl dgst -sha256`; both cores busy:
              sha256_files on two 512 MiB blobs vs two concurrent openssl processes; hashlib as info
    import    a rootfs tar into a fresh store: `python -m pyrun.cli import` vs `podman import`
    start     start busybox `true` and wait for its exit: `pyrun run --rm --network none` (the
              pyrun executable; pyrun-py, the Python CLI alone, as info) vs `runc run` and `crun run` on an OCI bundle (runc's default
              config, rootfs extracted once), `podman --runtime runc run --rm --network none`
              and `docker run --rm --network none` (images imported once from the same tar and
              removed at the end); pyrun's Client.containers.run and _core.run_container (the
              runtime alone, on the bundle runc runs) as info
    oci       the runc command line, youki's method: `create` + `start` + `delete -f` of a bundle
              running busybox `true` (the start capability's bundle, runc's default config), three
              processes per run: pyrun-runtime vs runc vs crun, each with its state root on the
              scratch fs and a unique id per run (goal, issue 7: <= 1.0x runc). And the per-call
              start-up of each binary: `state` of a container that does not exist (exit 1).
    bridge    the start case on each engine's default bridge network: `pyrun run --rm` (netns,
              veth, address, NAT) vs `podman --runtime runc run --rm` and `docker run --rm`;
              Client.containers.run as info (goal, issue 6: <= 0.3x podman's time). And TCP
              throughput, 1 GiB (64 MiB with --quick) of `dd | nc` from a running container to a
              receiver in this process: over pyrun's bridge (to its gateway) vs over loopback (a
              --network host container to 127.0.0.1), each run a `pyrun exec`. runc and crun
              are rows that say why they have no bridge (an OCI runtime joins a network
              namespace its caller made).
    vm        the VM a container replaces: qemu-system-x86_64 boots Debian's cloud kernel
              (linux-image-cloud-amd64, fetched once by benches/vm.py) with a busybox initramfs
              whose /init runs `poweroff -f`, until qemu exits; interleaved with `pyrun run --rm
              --network none` of busybox `true`. KVM when a KVM guest really boots here (an
              untimed probe boot, up to 10 s), else TCG (--vm-accel forces one); the tool's name
              says which, the note why, and the guest kernel's own boot time.
    scale     100 detached busybox `sleep 1000` per tool (10 with --quick), started one after the
              other, then removed by one `rm -f` with all their ids: `pyrun run -d` / `pyrun rm -f`
              vs `podman run -d --runtime runc` / `podman rm -f -t 0` and `docker run -d` /
              `docker rm -f` (all with --network none, on the start capability's images). Each
              case times the whole batch. While all of them run, the private memory of the
              per-container monitors (pyrun-runtime monitor, conmon, containerd-shim-runc-v2):
              the sum of Pss in /proc/PID/smaps_rollup over the monitors, divided by the number
              of containers, in MB of 10^6 bytes (goal for pyrun: <= 1 MB), in the notes of the
              start rows and in results.json (metrics). One tool at a time holds containers; the
              tools take turns within a round. Warm-up: one container started and removed per
              tool (not 100); one timed round by default (each is 100 starts), 2 with --quick.
    pull      an image from a registry on 127.0.0.1 (Debian's docker-registry, distribution 2.8,
              started for the run, storage on the scratch fs) until it is unpacked, ready to run:
              `pyrun pull` into a fresh store vs `docker pull` and `podman pull --tls-verify=false`
              (each followed by an untimed rmi) and `skopeo copy` to an OCI layout + `umoci
              unpack` (timed together); Client.images.pull as info. The image, built once per run
              (untimed) by pyrun: Debian minbase .tar.gz imported, then 5 layers of 4 MiB of
              random bytes each (`pyrun run` + `pyrun commit`), 6 layers, ~110 MiB compressed
              (with --quick: busybox plus one random file, and 5 layers of 1 MiB); pushed once.
              Goal (issue 4): pyrun pull <= 0.5x docker pull's time, judged in the pyrun row.
    push      the same image from the pyrun store that built it to a second registry, emptied
              (untimed) before and after every run so that nothing can be reused or mounted
              from an earlier run (skopeo remembers where blobs are and would mount them), a new
              repository each run: `pyrun push` vs `skopeo copy --dest-tls-verify=false` from an
              OCI layout exported once by `pyrun image copy`, and `docker push` and `podman push`
              of the image pulled once into their stores (untimed; they compress the layers
              again); Client.images.push as info. Each
              run is checked: the registry serves the manifest and holds every layer blob whole.
    build     the example multi-stage Dockerfile (examples/hello, BASE = the start capability's
              busybox images): cold (`--no-cache`) and a no-op rebuild (the same build again, its
              cache warmed by the warm-up round; each rebuild must give the same image id):
              `pyrun build` vs `docker build` (BuildKit where the buildx plugin is installed,
              else the classic builder) and `buildah bud --layers --runtime runc` (podman's
              store); docker's and buildah's cold results are removed after each run (untimed),
              all build images at the end. Goals (issue 5): no-op rebuild <= 0.1 s and <= 0.2x
              docker's, cold build <= 1.0x docker's, judged in the pyrun rows.

Method: every contender of a case runs once as a warm-up (excluded), then the contenders run
interleaved, round after round (the order rotates each round so no tool always runs first). The
inputs are read once before timing, so every tool sees a warm page cache. Work directories are
created before and removed after each timed run, and `sync` follows each run, outside the timing.
They lie on a scratch filesystem: by default (as root) a journaled ext4 on a loop device made for
the run, which holds podman's store too (see scratch() for why). CLI tools are timed with
time.perf_counter around subprocess.run (process start included); pyrun's Rust calls are timed in
the benchmark's own process. A contender that is missing or fails becomes a row that says
"not available: <why>". The report goes to DIR/RESULTS.md and DIR/results.json
(default DIR: benches/results). --quick uses tiny inputs (busybox, a 64 MiB blob, 2 rounds; 3
for start). Timed rounds by default: 5, 20 for start, 10 for bridge, 1 for scale, 3 for pull,
push and build; with --quick 2, 3 for start, 1 for vm.

Plots (matplotlib, when installed: the `test` extras): DIR/start-latency.png, the start
latencies of every engine (each timed run a point, a box per engine, log axis) with the VM's
boot as a reference line, and DIR/pull-build.png, bars of the pull, push and build medians;
benches/plots.py makes them from results.json, and can be run alone to redo them.

A run of some capabilities only (--only) merges into an existing report in DIR: the rows of the
other capabilities are kept from results.json (with the date, command and machine of the run that
measured them), unless that report was made in the other mode (--quick or not) or --no-merge.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import hashlib
import importlib.util
import io
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
PYTHON_SRC: Final = REPO / "python"
TESTS_DIR: Final = REPO / "tests"
CAPABILITIES: Final = (
    "extract", "sha256", "import", "start", "oci", "bridge", "vm", "scale", "pull", "push", "build"
)  # fmt: skip
# Timed rounds by default: (full, --quick); --rounds overrides them all.
DEFAULT_ROUNDS: Final = {
    "extract": (5, 2),
    "sha256": (5, 2),
    "import": (5, 2),
    "start": (20, 3),
    "oci": (20, 3),
    "bridge": (10, 2),
    "vm": (5, 1),
    "scale": (1, 2),
    "pull": (3, 2),
    "push": (3, 2),
    "build": (3, 2),
}
MiB: Final = 1 << 20
CMD_TIMEOUT: Final = 1800.0
INSTALL_HINT: Final = "ci/install-deps.sh installs it"

# Set by _load_pyrun(): how to reach pyrun from this process and from child processes.
_child_env: dict[str, str] = dict(os.environ)


class Unavailable(Exception):
    """A contender (or a whole case) cannot run here; the message says why."""


class CommandFailed(Exception):
    """A CLI contender exited non-zero; the message has the command and its stderr's tail."""


# --------------------------------------------------------------------------------------------
# helpers


def _tail(data: bytes | str, lines: int = 3) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) or "(no output)"


def run_cmd(
    cmd: Sequence[str | Path], *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a command, output captured; raise CommandFailed when it exits non-zero."""
    argv = [str(a) for a in cmd]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=CMD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"`{shlex.join(argv)}` timed out after {CMD_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise CommandFailed(
            f"`{shlex.join(argv)}` exited {proc.returncode}: {_tail(proc.stderr or proc.stdout)}"
        )
    return proc


def tool_path(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"{name} not found in PATH ({INSTALL_HINT})")
    return path


def tool_version(cmd: Sequence[str]) -> str:
    """First line of a tool's version output, or why there is none."""
    if shutil.which(cmd[0]) is None:
        return f"not installed ({cmd[0]} not in PATH)"
    try:
        proc = subprocess.run(
            list(cmd), stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    out = (proc.stdout or proc.stderr).decode(errors="replace").strip().splitlines()
    return out[0].strip().strip("*").strip() if out else f"unknown (exit {proc.returncode})"


def remove_tree(path: Path) -> None:
    """Remove a tree the tools extracted, read-only directories included."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        shutil.rmtree(path)
    except OSError:
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                p = Path(dirpath, d)
                if not p.is_symlink():
                    with contextlib.suppress(OSError):
                        p.chmod(0o700)
        shutil.rmtree(path)


def warm(path: Path) -> int:
    """Read a file once so that every contender starts with it in the page cache."""
    total = 0
    buf = bytearray(8 * MiB)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _load_pyrun() -> tuple[ModuleType | None, str | None]:
    """pyrun._core, putting python/ on the path (ours and the children's) if pyrun is not
    installed in this interpreter. Returns (module, None) or (None, why)."""
    if importlib.util.find_spec("pyrun") is None:
        sys.path.insert(0, str(PYTHON_SRC))
        old = os.environ.get("PYTHONPATH")
        _child_env["PYTHONPATH"] = f"{PYTHON_SRC}{os.pathsep}{old}" if old else str(PYTHON_SRC)
    try:
        from pyrun import _core
    except ImportError as e:
        return None, f"pyrun._core cannot be imported ({e}); build it with `maturin develop`"
    return _core, None


def _venv_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# --------------------------------------------------------------------------------------------
# contenders, cases, rows


RunFn = Callable[[Path, int], object]
CheckFn = Callable[[Path, object], None]
AfterFn = Callable[[Path, int], None]


@dataclass
class Contender:
    """One tool in a case. `run(workdir, n)` is timed; `workdir` is a fresh empty directory
    created before and removed after it. `before` (untimed) prepares what the run needs outside
    the work directory, `check` (untimed) validates what a run produced, `after` (untimed)
    undoes side effects outside the work directory."""

    tool: str
    timing: str  # "in-process" or "CLI"
    run: RunFn | None = None
    check: CheckFn | None = None
    after: AfterFn | None = None
    before: AfterFn | None = None
    role: str = "peer"  # "pyrun" (the baseline), "peer", or "info"
    note: str = ""
    unavailable: str | None = None
    samples: list[float] = field(default_factory=list)


@dataclass
class Case:
    capability: str
    name: str
    contenders: list[Contender]
    size: int | None = None  # bytes hashed, for a throughput note
    setup_error: str | None = None
    # Called with the case's rows once all rounds ran: notes from what the runs measured.
    finish: Callable[[list[Row]], None] | None = None


@dataclass
class Row:
    capability: str
    case: str
    tool: str
    timing: str
    role: str
    note: str
    samples: list[float]
    reason: str | None
    median: float | None = None
    min: float | None = None
    max: float | None = None
    ratio: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # other measures (scale: memory)

    def to_json(self) -> dict[str, Any]:
        extra = {"metrics": self.metrics} if self.metrics else {}
        return {
            "capability": self.capability,
            "case": self.case,
            "tool": self.tool,
            "timing": self.timing,
            "role": self.role,
            "note": self.note,
            "status": "ok" if self.reason is None else "not available",
            "reason": self.reason,
            "samples_s": [round(s, 6) for s in self.samples],
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "ratio_peer_over_pyrun": self.ratio,
            **extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Row:
        ok = d.get("status") == "ok"
        return cls(
            d["capability"],
            d["case"],
            d["tool"],
            d["timing"],
            d["role"],
            d.get("note", ""),
            list(d.get("samples_s", [])),
            None if ok else str(d.get("reason") or "not available"),
            d.get("median_s"),
            d.get("min_s"),
            d.get("max_s"),
            d.get("ratio_peer_over_pyrun"),
            dict(d.get("metrics") or {}),
        )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:40]


def run_case(case: Case, work: Path, rounds: int, warmups: int) -> list[Row]:
    """Warm-up round(s), then `rounds` interleaved rounds; rotate the order every round."""
    print(f"== {case.capability}: {case.name}", file=sys.stderr, flush=True)
    active = [
        c for c in case.contenders if case.setup_error is None and c.unavailable is None and c.run
    ]
    for rnd in range(warmups + rounds):
        shift = rnd % len(active) if active else 0
        for c in active[shift:] + active[:shift]:
            if c.unavailable is not None or c.run is None:
                continue
            wd = work / f"{_slug(case.name)}-{_slug(c.tool)}-{rnd}"
            wd.mkdir(parents=True)
            try:
                if c.before is not None:
                    c.before(wd, rnd)
                t0 = time.perf_counter()
                result = c.run(wd, rnd)
                elapsed = time.perf_counter() - t0
                if c.check is not None:
                    c.check(wd, result)
            except Exception as e:
                c.unavailable = f"failed: {e}" if isinstance(e, CommandFailed) else f"failed: {e!r}"
                print(f"   {c.tool}: {c.unavailable}", file=sys.stderr, flush=True)
                continue
            finally:
                try:
                    if c.after is not None:
                        c.after(wd, rnd)
                except Exception as e:
                    c.unavailable = c.unavailable or f"clean-up failed: {e}"
                remove_tree(wd)
                os.sync()  # no writeback of this run may overlap the next one
            if rnd >= warmups:
                c.samples.append(elapsed)
            kind = "warm-up" if rnd < warmups else f"round {rnd - warmups + 1}"
            print(f"   {kind:8} {c.tool:32} {elapsed:8.3f} s", file=sys.stderr, flush=True)
    rows = _rows(case)
    if case.finish is not None:
        case.finish(rows)
    return rows


def _rows(case: Case) -> list[Row]:
    rows: list[Row] = []
    for c in case.contenders:
        reason = case.setup_error or c.unavailable
        if reason is None and not c.samples:
            reason = "no timed run"
        row = Row(case.capability, case.name, c.tool, c.timing, c.role, c.note, c.samples, reason)
        if reason is None:
            row.median = statistics.median(c.samples)
            row.min = min(c.samples)
            row.max = max(c.samples)
            if case.size and row.median > 0:
                rate = f"{case.size / row.median / 1e9:.2f} GB/s"
                row.note = f"{row.note}; {rate}" if row.note else rate
        rows.append(row)
    base = next((r for r in rows if r.role == "pyrun"), None)
    if base is not None and base.median:
        for r in rows:
            if r is not base and r.median is not None and not r.tool.startswith("pyrun"):
                r.ratio = r.median / base.median
    return rows


# --------------------------------------------------------------------------------------------
# inputs


@dataclass
class Context:
    quick: bool
    work: Path  # scratch space for inputs and per-run directories
    core: ModuleType | None
    core_error: str | None
    podman_store: list[str] = field(default_factory=list)  # --root/--runroot on the scratch fs
    vm_accel: str = "auto"  # qemu's accelerator for the vm capability: auto, kvm or tcg
    inputs: dict[str, str] = field(default_factory=dict)
    # Undo what the cases made outside the scratch space (images in podman's and docker's
    # stores, open fds): run by main() in reverse order even when the benchmark fails.
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    # What the start and scale capabilities share, made once per run: "pyrun store" (Path),
    # "podman" (argv prefix), "docker" ([docker, storage driver line]).
    prepared: dict[str, Any] = field(default_factory=dict)


def _images_module() -> ModuleType:
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    images: ModuleType = importlib.import_module("images")
    return images


def rootfs_tar(ctx: Context, compression: str) -> Path:
    """The test image for this mode: Debian (plain, gz, zst from ci/test-images.sh) or, with
    --quick, busybox compressed here with gzip -6 / zstd -3."""
    images = _images_module()
    try:
        if not ctx.quick:
            path: Path = images.debian_tar(compression)
            return path
        plain: Path = images.busybox_tar()
    except images.ImageUnavailable as e:
        raise Unavailable(f"test image missing: {_tail(str(e), 2)}") from None
    if compression == "none":
        return plain
    out = ctx.work / ("busybox.tar.gz" if compression == "gz" else "busybox.tar.zst")
    if not out.exists():
        if compression == "gz":
            with open(plain, "rb") as src, gzip.open(out, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, MiB)
        else:
            run_cmd([tool_path("zstd"), "-q", "-3", "-o", out, plain])
    return out


def _gunzip_sha256(path: Path) -> str:
    h = hashlib.sha256()
    d = zlib.decompressobj(wbits=31)
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(d.decompress(chunk))
    h.update(d.flush())
    return "sha256:" + h.hexdigest()


def _unzstd_sha256(path: Path) -> str:
    """sha256 of a .zst file's decompressed bytes, through `zstd -dc`."""
    h = hashlib.sha256()
    with subprocess.Popen(
        [tool_path("zstd"), "-dc", str(path)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(4 * MiB):
            h.update(chunk)
    if proc.returncode != 0:
        raise CommandFailed(f"`zstd -dc {path}` exited {proc.returncode}")
    return "sha256:" + h.hexdigest()


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return "sha256:" + digest


def oci_layout(layer_gz: Path, layout: Path, tag: str, compression: str = "gzip") -> Path:
    """A one-layer OCI image layout around `layer_gz`, a gzip or (compression "zstd") zstd
    layer (hard-linked when possible), for umoci."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    h = hashlib.sha256()
    with open(layer_gz, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    layer_hex = h.hexdigest()
    try:
        os.link(layer_gz, blobs / layer_hex)
    except OSError:
        shutil.copyfile(layer_gz, blobs / layer_hex)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [
                _unzstd_sha256(layer_gz) if compression == "zstd" else _gunzip_sha256(layer_gz)
            ],
        },
        "history": [{"created_by": "benches/compare.py"}],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _write_blob(layout, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": f"application/vnd.oci.image.layer.v1.tar+{compression}",
                "digest": "sha256:" + layer_hex,
                "size": layer_gz.stat().st_size,
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _write_blob(layout, manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def make_blob(path: Path, size: int) -> str:
    """A file of `size` bytes: one os.urandom chunk (<= 64 MiB) repeated; returns its digest.
    Synced to disk so that no writeback runs during the timing."""
    chunk = os.urandom(min(64 * MiB, size))
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = chunk[: min(left, len(chunk))]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
        f.flush()
        os.fsync(f.fileno())
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------------------------
# capability: extract


def _check_rootfs(sub: str = "") -> CheckFn:
    def check(wd: Path, _result: object) -> None:
        root = wd / sub if sub else wd
        if not (root / "etc").is_dir() or not (root / "bin").exists():
            raise RuntimeError(f"no etc/ or bin/ under {root} after extraction")

    return check


def _pyrun_extract(ctx: Context, src: Path) -> Contender:
    c = Contender("pyrun extract_layer", "in-process", role="pyrun", unavailable=ctx.core_error)
    c.note = "also computes digest and DiffID"
    core = ctx.core
    if core is not None:

        def run(wd: Path, _n: int) -> object:
            assert core is not None
            return core.extract_layer(str(src), str(wd))

        c.run = run
        c.check = _check_rootfs()
    return c


def _tar_extract(flags: list[str], src: Path, tool: str, needs: str | None = None) -> Contender:
    c = Contender(tool, "CLI")
    try:
        tar = tool_path("tar")
        if needs:
            tool_path(needs)
    except Unavailable as e:
        c.unavailable = str(e)
        return c
    c.run = lambda wd, _n: run_cmd([tar, *flags, src, "-C", wd])
    c.check = _check_rootfs()
    return c


def _umoci_extract(ctx: Context, src: Path, compression: str = "gzip") -> Contender:
    c = Contender("umoci unpack", "CLI", note="OCI layout prepared once; writes an mtree too")
    try:
        umoci = tool_path("umoci")
        layout = oci_layout(src, ctx.work / f"oci-layout-{compression}", "bench", compression)
    except (Unavailable, CommandFailed, OSError, zlib.error, EOFError) as e:
        c.unavailable = str(e) if isinstance(e, Unavailable) else f"OCI layout failed: {e!r}"
        return c
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    if compression != "gzip":  # older umoci (0.4.7) knows only gzip layers: probe, untimed
        probe = ctx.work / f"umoci-probe-{compression}"
        proc = subprocess.run(
            [umoci, "unpack", *rootless, "--image", f"{layout}:bench", str(probe)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        remove_tree(probe)
        if proc.returncode != 0:
            err = _first_error_line(CommandFailed(f"exit {proc.returncode}"), proc.stderr)
            why = err.rsplit(": ", 2)[-2:] if ": " in err else [err]
            c.unavailable = (
                f"{tool_version([umoci, '--version'])} cannot unpack {compression} layers "
                f"({': '.join(why)})"
            )
            return c
    c.run = lambda wd, _n: run_cmd(
        [umoci, "unpack", *rootless, "--image", f"{layout}:bench", wd / "bundle"]
    )
    c.check = _check_rootfs("bundle/rootfs")
    return c


def extract_cases(ctx: Context) -> list[Case]:
    cases: list[Case] = []
    image = "busybox" if ctx.quick else "debian"
    for comp, label in (("gz", ".tar.gz"), ("zst", ".tar.zst"), ("none", ".tar (plain, info)")):
        try:
            src: Path | None = rootfs_tar(ctx, comp)
            assert src is not None
            ctx.inputs[f"extract {label}"] = f"{src} ({human_bytes(src.stat().st_size)})"
            warm(src)
            error = None
        except (Unavailable, CommandFailed, OSError) as e:
            src, error = None, str(e)
        path = src or Path("/nonexistent")
        contenders = [_pyrun_extract(ctx, path)]
        if comp == "gz":
            contenders.append(_tar_extract(["-xzf"], path, "GNU tar -xzf", "gzip"))
            contenders.append(
                _umoci_extract(ctx, path)
                if src
                else Contender("umoci unpack", "CLI", unavailable=error)
            )
        elif comp == "zst":
            contenders.append(_tar_extract(["--zstd", "-xf"], path, "GNU tar --zstd -xf", "zstd"))
            contenders.append(
                _umoci_extract(ctx, path, "zstd")
                if src
                else Contender("umoci unpack", "CLI", unavailable=error)
            )
        else:
            contenders.append(_tar_extract(["-xf"], path, "GNU tar -xf"))
        cases.append(Case("extract", f"{image}{label}", contenders, setup_error=error))
    return cases


# --------------------------------------------------------------------------------------------
# capability: sha256


def _openssl_hex(out: bytes) -> str:
    return "sha256:" + out.decode().strip().rsplit("= ", 1)[-1].strip()


def _expect(digests: list[str]) -> CheckFn:
    def check(_wd: Path, result: object) -> None:
        got = result if isinstance(result, list) else [result]
        if got != digests:
            raise RuntimeError(f"digest mismatch: got {got}, expected {digests}")

    return check


def _hashlib_file(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _hashlib_threads(paths: list[Path]) -> list[str]:
    out = [""] * len(paths)

    def work(i: int) -> None:
        out[i] = _hashlib_file(paths[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _openssl_parallel(openssl: str, paths: list[Path]) -> list[str]:
    procs = [
        subprocess.Popen(
            [openssl, "dgst", "-sha256", str(p)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in paths
    ]
    outs = [p.communicate(timeout=CMD_TIMEOUT) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise CommandFailed(f"openssl dgst exited {p.returncode}: {_tail(err)}")
    return [_openssl_hex(o) for o, _ in outs]


def sha256_cases(ctx: Context) -> list[Case]:
    one_size = 64 * MiB if ctx.quick else 16 * 64 * MiB
    half = one_size // 2
    blob = ctx.work / "blob"
    pair = [ctx.work / "blob-a", ctx.work / "blob-b"]
    error: str | None = None
    try:
        one = [make_blob(blob, one_size)]
        both = [make_blob(p, half) for p in pair]
        for p in (blob, *pair):
            warm(p)
    except OSError as e:
        error, one, both = f"cannot write the blobs: {e}", [], []
    ctx.inputs["sha256"] = f"{human_bytes(one_size)} blob; 2 x {human_bytes(half)} blobs"
    core = ctx.core
    try:
        openssl: str | None = tool_path("openssl")
        no_openssl = None
    except Unavailable as e:
        openssl, no_openssl = None, str(e)

    def pyrun_one(_wd: Path, _n: int) -> object:
        assert core is not None
        return core.sha256_file(str(blob))

    def pyrun_both(_wd: Path, _n: int) -> object:
        assert core is not None
        return core.sha256_files([str(p) for p in pair])

    def openssl_one(_wd: Path, _n: int) -> object:
        assert openssl is not None
        return _openssl_hex(run_cmd([openssl, "dgst", "-sha256", blob]).stdout)

    def openssl_both(_wd: Path, _n: int) -> object:
        assert openssl is not None
        return _openssl_parallel(openssl, pair)

    single = Case(
        "sha256",
        f"1 blob of {human_bytes(one_size)}",
        [
            Contender(
                "pyrun sha256_file",
                "in-process",
                pyrun_one if core else None,
                _expect(one),
                role="pyrun",
                unavailable=ctx.core_error,
            ),
            Contender(
                "openssl dgst -sha256",
                "CLI",
                openssl_one if openssl else None,
                _expect(one),
                unavailable=no_openssl,
            ),
            Contender(
                "Python hashlib.file_digest",
                "in-process",
                lambda _wd, _n: _hashlib_file(blob),
                _expect(one),
                role="info",
            ),
        ],
        size=one_size,
        setup_error=error,
    )
    double = Case(
        "sha256",
        f"2 blobs of {human_bytes(half)}, both cores busy",
        [
            Contender(
                "pyrun sha256_files([a, b])",
                "in-process",
                pyrun_both if core else None,
                _expect(both),
                role="pyrun",
                unavailable=ctx.core_error,
            ),
            Contender(
                "2 x openssl dgst, concurrent",
                "CLI",
                openssl_both if openssl else None,
                _expect(both),
                unavailable=no_openssl,
            ),
            Contender(
                "Python hashlib, 2 threads",
                "in-process",
                lambda _wd, _n: _hashlib_threads(pair),
                _expect(both),
                role="info",
            ),
        ],
        size=2 * half,
        setup_error=error,
    )
    return [single, double]


# --------------------------------------------------------------------------------------------
# capability: import


PODMAN_REPO: Final = "localhost/deb-bench"


def _podman_leftovers(podman: list[str]) -> None:
    """Remove images an earlier, interrupted run of this script left (ours only): podman
    deduplicates layers, so a leftover would make the import look cheaper than it is."""
    proc = run_cmd([*podman, "images", "--format", "{{.Repository}}:{{.Tag}}"])
    tags = [t for t in proc.stdout.decode().split() if t.startswith(PODMAN_REPO + ":")]
    if tags:
        run_cmd([*podman, "rmi", "--force", *tags])


def import_cases(ctx: Context) -> list[Case]:
    name = "busybox" if ctx.quick else "debian"
    ref = f"{'bb' if ctx.quick else 'deb'}:1"
    error: str | None = None
    try:
        src = rootfs_tar(ctx, "none")
        ctx.inputs["import"] = f"{src} ({human_bytes(src.stat().st_size)})"
        warm(src)
    except (Unavailable, OSError) as e:
        src, error = Path("/nonexistent"), str(e)
    python = _venv_python()

    pyrun_cli = Contender(
        "pyrun import",
        "CLI",
        lambda wd, _n: run_cmd(
            [python, "-m", "pyrun.cli", "--root", wd / "store", "import", src, ref],
            env=_child_env,
        ),
        role="pyrun",
        note="python -m pyrun.cli, fresh store each run",
        unavailable=ctx.core_error,
    )

    def client_import(wd: Path, _n: int) -> object:
        from pyrun.client import Client

        return Client(wd / "store").images.import_image(src, ref)

    pyrun_api = Contender(
        "pyrun Client.images.import_image",
        "in-process",
        client_import,
        role="info",
        note="no interpreter start",
        unavailable=ctx.core_error,
    )
    store_note = "store on the scratch fs; " if ctx.podman_store else ""
    podman_c = Contender("podman import", "CLI", note=f"{store_note}then podman rmi, untimed")
    try:
        podman = [tool_path("podman"), *ctx.podman_store]
        _podman_leftovers(podman)

        def podman_import(_wd: Path, n: int) -> object:
            return run_cmd([*podman, "import", src, f"{PODMAN_REPO}:{n}"])

        def podman_rmi(_wd: Path, n: int) -> None:
            run_cmd([*podman, "rmi", f"{PODMAN_REPO}:{n}"])

        podman_c.run, podman_c.after = podman_import, podman_rmi
    except (Unavailable, CommandFailed) as e:
        podman_c.unavailable = str(e)
    return [
        Case("import", f"{name} rootfs .tar", [pyrun_cli, podman_c, pyrun_api], setup_error=error)
    ]


# --------------------------------------------------------------------------------------------
# capability: start


PODMAN_START_IMAGE: Final = "localhost/bb-bench"
DOCKER_START_IMAGE: Final = "pyrun-bench/bb:1"
PYRUN_START_REF: Final = "bb:bench"

# `runc spec` of runc 1.1.5 (root.path and process.args set by start_bundle): used for the bundle
# only where runc is not installed, so that pyrun's runtime row can still run.
RUNC_DEFAULT_SPEC: Final = """{"ociVersion":"1.0.2-dev","process":{"terminal":true,"user":{"uid":0,
"gid":0},"args":["sh"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
"TERM=xterm"],"cwd":"/","capabilities":{"bounding":["CAP_AUDIT_WRITE","CAP_KILL",
"CAP_NET_BIND_SERVICE"],"effective":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],
"permitted":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"ambient":["CAP_AUDIT_WRITE",
"CAP_KILL","CAP_NET_BIND_SERVICE"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],
"noNewPrivileges":true},"root":{"path":"rootfs","readonly":true},"hostname":"runc","mounts":[
{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs",
"source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},{"destination":
"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance",
"ptmxmode=0666","mode=0620","gid=5"]},{"destination":"/dev/shm","type":"tmpfs","source":"shm",
"options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},{"destination":"/dev/mqueue",
"type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},{"destination":"/sys",
"type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},{"destination":
"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev",
"relatime","ro"]}],"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}]},
"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}],
"maskedPaths":["/proc/acpi","/proc/asound","/proc/kcore","/proc/keys","/proc/latency_stats",
"/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/sys/firmware","/proc/scsi"],
"readonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]}}"""


def _pyrun_cli() -> list[str]:
    """The `pyrun` command next to the venv's interpreter (the native executable, which
    replays a run line from its template and hands the rest to the Python CLI), else
    `python -m pyrun.cli`."""
    script = Path(_venv_python()).parent / "pyrun"
    if script.exists():
        return [str(script)]
    return [_venv_python(), "-m", "pyrun.cli"]


def _pyrun_cli_note(cli: list[str]) -> str:
    return (
        "the pyrun executable (templates replay a run or no-op build line natively; other "
        "lines go to the Python CLI)"
        if len(cli) == 1
        else "python -m pyrun.cli (no pyrun executable)"
    )


def _pyrun_python_cli() -> list[str]:
    """The Python CLI alone (`pyrun-py`, else `python -m pyrun.cli`): what `pyrun` runs for a
    line without a run template."""
    script = Path(_venv_python()).parent / "pyrun-py"
    if script.exists():
        return [str(script)]
    return [_venv_python(), "-m", "pyrun.cli"]


def _busybox_src() -> tuple[Path, str | None]:
    """The busybox test tar, warm in the page cache, and None; or a path that is not there and
    why the tar is missing."""
    images = _images_module()
    try:
        src: Path = images.busybox_tar()
        warm(src)
    except (images.ImageUnavailable, OSError) as e:
        return Path("/nonexistent"), f"test image missing: {_tail(str(e), 2)}"
    return src, None


def start_bundle(ctx: Context, src: Path, bundle: Path) -> str:
    """An OCI bundle that runs busybox `true`: runc's default config.json (`runc spec`) with
    process.args ["true"], terminal false and root.path the absolute path of a rootfs extracted
    by pyrun._core.extract_layer. Returns where the config came from."""
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    if ctx.core is not None:
        ctx.core.extract_layer(str(src), str(rootfs))
    else:
        run_cmd([tool_path("tar"), "-xf", src, "-C", rootfs])
    try:
        run_cmd([tool_path("runc"), "spec", "--bundle", bundle])
        spec = json.loads((bundle / "config.json").read_text())
        origin = "`runc spec`"
    except (Unavailable, CommandFailed):
        spec = json.loads(RUNC_DEFAULT_SPEC)
        origin = "runc 1.1.5's default spec (embedded: runc unavailable)"
    spec["process"]["args"] = ["true"]
    spec["process"]["terminal"] = False
    spec["root"]["path"] = str(rootfs)
    (bundle / "config.json").write_text(json.dumps(spec, indent=2))
    return origin


def _first_error_line(e: CommandFailed | Unavailable | OSError, stderr: bytes = b"") -> str:
    for line in stderr.decode(errors="replace").splitlines():
        if line.strip():
            return line.strip()
    return str(e)


def _oci_runtime(ctx: Context, tool: str, bundle: Path, note: str) -> Contender:
    """`TOOL run --bundle B ID` with a unique ID per run and the runtime's state under the
    scratch space; probed once (untimed) so that a runtime that refuses this host says why."""
    c = Contender(f"{tool} run", "CLI", note=note)
    try:
        exe = tool_path(tool)
    except Unavailable as e:
        c.unavailable = str(e)
        return c
    state = ctx.work / f"{tool}-state"
    state.mkdir(exist_ok=True)
    base = [exe, "--root", str(state)]
    prefix = f"pyrun-bench-{os.getpid()}"

    def delete(cid: str) -> None:
        if (state / cid).exists():  # `run` deletes its container on exit; this is a fallback
            subprocess.run([*base, "delete", "-f", cid], capture_output=True, check=False)

    probe = f"{prefix}-probe"
    proc = subprocess.run(
        [*base, "run", "--bundle", str(bundle), probe],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )
    delete(probe)
    if proc.returncode != 0:
        c.unavailable = _first_error_line(CommandFailed(f"exit {proc.returncode}"), proc.stderr)
        return c
    c.run = lambda _wd, n: run_cmd([*base, "run", "--bundle", bundle, f"{prefix}-{n}"])
    c.after = lambda _wd, n: delete(f"{prefix}-{n}")
    return c


def _pyrun_store(ctx: Context, src: Path) -> Path:
    """The scratch pyrun store with the busybox image as PYRUN_START_REF, imported once per run
    (start and scale share it); raises CommandFailed."""
    store: Path | None = ctx.prepared.get("pyrun store")
    if store is None:
        store = ctx.work / "start-store"
        run_cmd([*_pyrun_cli(), "--root", store, "import", src, PYRUN_START_REF], env=_child_env)
        ctx.prepared["pyrun store"] = store
    return store


def _podman_image(ctx: Context, src: Path) -> list[str]:
    """podman's argv prefix (its store on the scratch fs when there is one), with the busybox
    image imported once per run as PODMAN_START_IMAGE and removed (with any container of it) at
    the end; raises Unavailable or CommandFailed."""
    podman: list[str] | None = ctx.prepared.get("podman")
    if podman is None:
        podman = [tool_path("podman"), *ctx.podman_store]
        tool_path("runc")
        run_cmd([*podman, "import", src, PODMAN_START_IMAGE])
        argv = podman

        def cleanup() -> None:
            subprocess.run(
                [*argv, "rmi", "--force", PODMAN_START_IMAGE], capture_output=True, check=False
            )

        ctx.cleanups.append(cleanup)
        ctx.prepared["podman"] = podman
    return podman


def _docker_image(ctx: Context, src: Path) -> tuple[str, str]:
    """docker's path and a line on its daemon's storage, with the busybox image imported once per
    run as DOCKER_START_IMAGE and removed (containers of it first) at the end; raises Unavailable
    or CommandFailed."""
    prepared: tuple[str, str] | None = ctx.prepared.get("docker")
    if prepared is None:
        docker = tool_path("docker")
        info = run_cmd(
            [
                docker,
                "info",
                "--format",
                "{{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}",
            ]
        )
        run_cmd([docker, "import", src, DOCKER_START_IMAGE])

        def cleanup() -> None:
            # Containers an interrupted run may have left, then the image.
            ps = subprocess.run(
                [docker, "ps", "-aq", "--filter", f"ancestor={DOCKER_START_IMAGE}"],
                capture_output=True,
                check=False,
            )
            if ids := ps.stdout.decode().split():
                subprocess.run([docker, "rm", "-f", *ids], capture_output=True, check=False)
            subprocess.run([docker, "rmi", DOCKER_START_IMAGE], capture_output=True, check=False)

        ctx.cleanups.append(cleanup)
        prepared = (docker, info.stdout.decode().strip())
        ctx.prepared["docker"] = prepared
    return prepared


def _podman_start(ctx: Context, src: Path) -> Contender:
    store = "store on the scratch fs; " if ctx.podman_store else ""
    c = Contender(
        "podman run --rm",
        "CLI",
        note=f"--runtime runc --network none; {store}image from `podman import` once",
    )
    try:
        podman = _podman_image(ctx, src)
    except (Unavailable, CommandFailed) as e:
        c.unavailable = str(e)
        return c
    cmd = [*podman, "run", "--runtime", "runc", "--rm", "--network", "none"]
    c.run = lambda _wd, _n: run_cmd([*cmd, PODMAN_START_IMAGE, "true"])
    return c


def _docker_start(ctx: Context, src: Path) -> Contender:
    c = Contender("docker run --rm", "CLI", note="--network none; image from `docker import` once")
    try:
        docker, driver = _docker_image(ctx, src)
    except (Unavailable, CommandFailed) as e:
        c.unavailable = str(e)
        return c
    c.note += f"; daemon's storage driver {driver}"
    cmd = [docker, "run", "--rm", "--network", "none", DOCKER_START_IMAGE, "true"]
    c.run = lambda _wd, _n: run_cmd(cmd)
    return c


def bridge_cases(ctx: Context) -> list[Case]:
    """Issue 6: start `true` on each engine's default bridge network, and TCP throughput from a
    container to the host over pyrun's bridge against the host's loopback."""
    src, error = _busybox_src()
    cli = _pyrun_cli()
    store = ctx.work / "start-store"
    pyrun_cli = Contender(
        "pyrun run --rm",
        "CLI",
        lambda _wd, _n: run_cmd(
            [*cli, "--root", store, "run", "--rm", PYRUN_START_REF, "true"], env=_child_env
        ),
        role="pyrun",
        note="default bridge: a netns, a veth on the bridge, an address, NAT rules kept",
        unavailable=ctx.core_error,
    )

    def client_run(_wd: Path, _n: int) -> object:
        from pyrun.client import Client

        return Client(store).containers.run(PYRUN_START_REF, ["true"], remove=True)

    pyrun_api = Contender(
        "pyrun Client.containers.run",
        "in-process",
        client_run,
        role="info",
        note="remove=True, default bridge; no interpreter start",
        unavailable=ctx.core_error,
    )
    podman = Contender("podman run --rm", "CLI", note="--runtime runc, podman's default network")
    docker = Contender("docker run --rm", "CLI", note="Docker's default bridge (docker0)")
    # An OCI runtime has no network of its own: it joins a namespace that its caller (podman,
    # containerd, CNI) made. The rows say so rather than leave a gap.
    no_net = (
        "no bridge of its own: an OCI runtime joins a network namespace its caller (podman, "
        "containerd, CNI) made; the podman and docker rows run runc"
    )
    runtimes = [Contender(f"{t} run", "CLI", unavailable=no_net) for t in ("runc", "crun")]
    start = [pyrun_cli, pyrun_api, *runtimes, podman, docker]
    if error is None:
        try:
            _pyrun_store(ctx, src)
        except CommandFailed as e:
            pyrun_cli.unavailable = pyrun_api.unavailable = f"pyrun import failed: {e}"
        try:
            pod = _podman_image(ctx, src)
            cmd = [*pod, "run", "--runtime", "runc", "--rm", PODMAN_START_IMAGE, "true"]
            podman.run = lambda _wd, _n: run_cmd(cmd)
        except (Unavailable, CommandFailed) as e:
            podman.unavailable = str(e)
        try:
            dock, _driver = _docker_image(ctx, src)
            dcmd = [dock, "run", "--rm", DOCKER_START_IMAGE, "true"]
            docker.run = lambda _wd, _n: run_cmd(dcmd)
        except (Unavailable, CommandFailed) as e:
            docker.unavailable = str(e)
    cases = [Case("bridge", "busybox `true` on the default bridge", start, setup_error=error)]

    def purge_networks() -> None:
        from pyrun.network import purge
        from pyrun.store import Store

        if (store / "networks").is_dir():
            purge(Store(store))

    ctx.cleanups.append(purge_networks)

    # Throughput: 1 GiB (64 MiB with --quick) from busybox `dd | nc` in a running container to a
    # receiver in this process, over the bridge (to the bridge's gateway) vs over loopback (a
    # --network host container to 127.0.0.1). Both go through the same `pyrun exec`, so the
    # difference is the path, not the tools.
    size_mib = 64 if ctx.quick else 1024
    receiver = socket.socket()
    receiver.bind(("0.0.0.0", 0))
    receiver.listen(4)
    port = receiver.getsockname()[1]
    ctx.cleanups.append(receiver.close)

    def drain() -> None:
        while True:
            try:
                conn, _ = receiver.accept()
            except OSError:
                return
            with conn:
                while conn.recv(1 << 20):
                    pass

    threading.Thread(target=drain, daemon=True).start()
    holders: dict[str, tuple[str, str]] = {}

    def sender(mode: str) -> RunFn:
        def run(_wd: Path, _n: int) -> object:
            cid, host = holders[mode]
            send = f"dd if=/dev/zero bs=1M count={size_mib} 2>/dev/null | nc {host} {port}"
            return run_cmd([*cli, "--root", store, "exec", cid, "sh", "-c", send], env=_child_env)

        return run

    over_bridge = Contender("pyrun bridge -> host", "CLI", sender("bridge"), role="pyrun",
                            note=f"{size_mib} MiB, `pyrun exec` of dd | nc to the gateway")  # fmt: skip
    over_lo = Contender("host loopback", "CLI", sender("host"),
                        note=f"{size_mib} MiB, the same through a --network host container to 127.0.0.1")  # fmt: skip
    tput_error = error or ctx.core_error
    if tput_error is None:
        try:
            for mode in ("bridge", "host"):
                out = run_cmd([*cli, "--root", store, "run", "-d", "--network", mode,
                               PYRUN_START_REF, "sleep", "100000"], env=_child_env)  # fmt: skip
                cid = out.stdout.decode().strip()
                holders[mode] = (cid, "127.0.0.1")
                ctx.cleanups.append(_remover(cli, store, cid))
            gw = json.loads(run_cmd([*cli, "--root", store, "network", "inspect", "bridge"],
                                    env=_child_env).stdout)[0]["IPAM"]["Config"][0]["Gateway"]  # fmt: skip
            holders["bridge"] = (holders["bridge"][0], gw)
        except (CommandFailed, ValueError, KeyError) as e:
            tput_error = f"cannot start the sender containers: {e}"
    cases.append(
        Case(
            "bridge",
            f"TCP {size_mib} MiB container -> host",
            [over_bridge, over_lo],
            size=size_mib * MiB,
            setup_error=tput_error,
        )
    )
    return cases


def _remover(cli: list[str], store: Path, cid: str) -> Callable[[], None]:
    def remove() -> None:
        subprocess.run(
            [*cli, "--root", str(store), "rm", "-f", cid], capture_output=True, env=_child_env
        )

    return remove


def start_cases(ctx: Context) -> list[Case]:
    """Start a container of the busybox image running `true` and wait for its exit."""
    src, error = _busybox_src()
    if error is None:
        ctx.inputs["start"] = f"{src} ({human_bytes(src.stat().st_size)}), command `true`"
    store = ctx.work / "start-store"
    bundle = ctx.work / "start-bundle"
    cli = _pyrun_cli()
    cli_note = _pyrun_cli_note(cli)
    line = ["run", "--rm", "--network", "none", PYRUN_START_REF, "true"]

    pyrun_cli = Contender(
        "pyrun run --rm",
        "CLI",
        lambda _wd, _n: run_cmd([*cli, "--root", store, *line], env=_child_env),
        role="pyrun",
        note=f"{cli_note}; overlay root on the store's layers; a cgroup per container (v1: memory, cpu, cpuacct, cpuset, pids, freezer)",
        unavailable=ctx.core_error,
    )
    python_cli = _pyrun_python_cli()
    pyrun_py = Contender(
        "pyrun-py run --rm",
        "CLI",
        lambda _wd, _n: run_cmd([*python_cli, "--root", store, *line], env=_child_env),
        role="info",
        note="the Python CLI alone (what runs a line without a template)",
        unavailable=ctx.core_error,
    )

    def client_run(_wd: Path, _n: int) -> object:
        from pyrun.client import Client

        return Client(store).containers.run(
            PYRUN_START_REF, ["true"], remove=True, network_mode="none"
        )

    pyrun_api = Contender(
        "pyrun Client.containers.run",
        "in-process",
        client_run,
        role="info",
        note="remove=True, network_mode none; no interpreter start",
        unavailable=ctx.core_error,
    )
    core = ctx.core
    devnull = os.open(os.devnull, os.O_WRONLY)
    ctx.cleanups.append(lambda: os.close(devnull))

    def runtime_run(_wd: Path, _n: int) -> object:
        assert core is not None
        status = core.run_container(str(bundle), stdio=(devnull, devnull))
        if status != 0:
            raise RuntimeError(f"run_container returned {status}")
        return status

    pyrun_rt = Contender(
        "pyrun _core.run_container",
        "in-process",
        runtime_run,
        role="info",
        note="runtime only, on the bundle runc runs; no cgroup (the bundle sets no limits)",
        unavailable=ctx.core_error,
    )
    contenders = [pyrun_cli, pyrun_py, pyrun_api, pyrun_rt]
    if error is None:
        try:
            _pyrun_store(ctx, src)
        except CommandFailed as e:
            for c in (pyrun_cli, pyrun_py, pyrun_api):
                c.unavailable = c.unavailable or f"pyrun import failed: {e}"
        try:
            origin = start_bundle(ctx, src, bundle)
            ctx.inputs["start bundle"] = f"{bundle}: config.json from {origin}"
        except Exception as e:
            error = f"cannot prepare the OCI bundle: {e}"
    if error is not None:
        contenders += [Contender(t, "CLI") for t in ("runc run", "crun run")]
        contenders += [Contender(t, "CLI") for t in ("podman run --rm", "docker run --rm")]
    else:
        state = "state under the scratch fs; unique id per run"
        contenders.append(_oci_runtime(ctx, "runc", bundle, f"{state}; creates v1 cgroups"))
        contenders.append(_oci_runtime(ctx, "crun", bundle, state))
        contenders.append(_podman_start(ctx, src))
        contenders.append(_docker_start(ctx, src))
    return [Case("start", "busybox `true`, start to exit", contenders, setup_error=error)]


# --------------------------------------------------------------------------------------------
# capability: vm


def vm_cases(ctx: Context) -> list[Case]:
    """Issue 8's VM baseline: boot a Debian cloud kernel under qemu to an init that powers off at
    once, interleaved with `pyrun run --rm --network none` of busybox `true` (the start case's
    baseline), so the ratio compares a VM's start-to-exit with a container's on the same load."""
    import vm  # benches/vm.py

    src, error = _busybox_src()
    cli = _pyrun_cli()
    store = ctx.work / "start-store"
    pyrun_cli = Contender(
        "pyrun run --rm",
        "CLI",
        lambda _wd, _n: run_cmd(
            [*cli, "--root", store, "run", "--rm", "--network", "none", PYRUN_START_REF, "true"],
            env=_child_env,
        ),
        role="pyrun",
        note="--network none, as in the start case",
        unavailable=ctx.core_error,
    )
    qemu = Contender(f"{vm.QEMU} VM", "CLI")
    guest: list[float] = []
    if error is None:
        try:
            _pyrun_store(ctx, src)
        except CommandFailed as e:
            pyrun_cli.unavailable = pyrun_cli.unavailable or f"pyrun import failed: {e}"
        try:
            assets = vm.assets(src)
            print(f"== vm: choosing the accelerator ({ctx.vm_accel})", file=sys.stderr, flush=True)
            accel, why = vm.choose_accel(assets, ctx.vm_accel)
        except vm.VmUnavailable as e:
            qemu.unavailable = str(e)
        else:
            qemu.tool = f"{vm.QEMU} -accel {accel}"
            qemu.note = (
                f"accelerator {accel.upper()}: {why}; kernel {assets.kernel_package}, "
                "busybox initramfs whose /init runs `poweroff -f`; 1 vCPU, 256 MiB, no network"
            )
            ctx.inputs["vm"] = (
                f"{assets.kernel} ({assets.kernel_package}), {assets.initrd}; accelerator "
                f"{accel.upper()} ({why})"
            )

            def run(_wd: Path, _n: int) -> object:
                b = vm.boot(assets, accel)
                if b.guest_seconds is not None:
                    guest.append(b.guest_seconds)
                return b

            qemu.run = run

    def finish(rows: list[Row]) -> None:
        row = next((r for r in rows if r.tool.startswith(vm.QEMU)), None)
        if row is not None and row.reason is None and guest:
            timed = guest[-len(row.samples) :]
            row.note += f"; the guest kernel's own boot to power-off {statistics.median(timed):.3f} s (median)"

    return [
        Case(
            "vm",
            "boot to power-off vs container start to exit",
            [pyrun_cli, qemu],
            setup_error=error,
            finish=finish,
        )
    ]


# --------------------------------------------------------------------------------------------
# capability: oci


def _pyrun_runtime_path() -> str:
    """pyrun-runtime as pyrun finds it: $PYRUN_RUNTIME, the package's _bin, else PATH."""
    env = os.environ.get("PYRUN_RUNTIME")
    if env:
        return env
    here = PYTHON_SRC / "pyrun" / "_bin" / "pyrun-runtime"
    if here.exists():
        return str(here)
    return tool_path("pyrun-runtime")


def _oci_lifecycle(ctx: Context, tool: str, exe: str | None, bundle: Path, role: str) -> Contender:
    """`TOOL create --bundle B ID`, `TOOL start ID`, `TOOL delete -f ID` (youki's method)."""
    c = Contender(f"{tool} create+start+delete", "CLI", role=role)
    try:
        exe = exe or tool_path(tool)
    except Unavailable as e:
        c.unavailable = str(e)
        return c
    state = ctx.work / f"oci-{tool}-state"
    state.mkdir(exist_ok=True)
    base = [exe, "--root", str(state)]
    prefix = f"pyrun-oci-{os.getpid()}"
    c.note = "state root on the scratch fs; container stdio /dev/null"

    errors = ctx.work / f"oci-{tool}.stderr"

    def lifecycle(cid: str) -> None:
        # The created container keeps create's stdio: /dev/null and a file, never a pipe that
        # would be waited on until the container exits.
        for args in (
            ["create", "--bundle", str(bundle), cid],
            ["start", cid],
            ["delete", "-f", cid],
        ):
            with errors.open("wb") as err:
                proc = subprocess.run(
                    [*base, *args],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    timeout=120,
                    check=False,
                )
            if proc.returncode != 0:
                raise CommandFailed(
                    f"{tool} {args[0]} exited {proc.returncode}: {_tail(errors.read_bytes())}"
                )

    try:
        lifecycle(f"{prefix}-probe")
    except (CommandFailed, OSError, subprocess.TimeoutExpired) as e:
        c.unavailable = str(e)
        subprocess.run([*base, "delete", "-f", f"{prefix}-probe"], capture_output=True, check=False)
        return c
    c.run = lambda _wd, n: lifecycle(f"{prefix}-{n}")
    c.after = lambda _wd, n: subprocess.run(
        [*base, "delete", "-f", f"{prefix}-{n}"], capture_output=True, check=False
    )
    return c


def _oci_startup(ctx: Context, tool: str, exe: str | None, role: str) -> Contender:
    """One call that does no container work: `TOOL state <missing id>` (exits 1)."""
    c = Contender(f"{tool} state (missing)", "CLI", role=role, note="process start + one lookup")
    try:
        exe = exe or tool_path(tool)
    except Unavailable as e:
        c.unavailable = str(e)
        return c
    state = ctx.work / f"oci-{tool}-state"
    state.mkdir(exist_ok=True)
    argv = [exe, "--root", str(state), "state", "pyrun-oci-missing"]

    def call(_wd: Path, _n: int) -> object:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if proc.returncode != 1:
            raise CommandFailed(f"{tool} state exited {proc.returncode}, not 1")
        return proc

    c.run = call
    return c


def oci_cases(ctx: Context) -> list[Case]:
    """Issue 7: the runc command line's create + start + delete, and its per-call start-up."""
    images = _images_module()
    error: str | None = None
    bundle = ctx.work / "oci-bundle"
    try:
        src: Path = images.busybox_tar()
        warm(src)
        origin = start_bundle(ctx, src, bundle)
        ctx.inputs["oci bundle"] = f"{bundle}: config.json from {origin}, command `true`"
    except Exception as e:
        error = f"cannot prepare the OCI bundle: {_tail(str(e), 2)}"
    try:
        pyrt: str | None = _pyrun_runtime_path()
    except Unavailable:
        pyrt = None
    tools: list[tuple[str, str | None, str]] = [
        ("pyrun-runtime", pyrt, "pyrun"),
        ("runc", None, "peer"),
        ("crun", None, "peer"),
    ]
    if error is not None:
        life = [Contender(f"{t} create+start+delete", "CLI", role=r) for t, _, r in tools]
        boot = [Contender(f"{t} state (missing)", "CLI", role=r) for t, _, r in tools]
    else:
        life = [_oci_lifecycle(ctx, t, exe, bundle, r) for t, exe, r in tools]
        boot = [_oci_startup(ctx, t, exe, r) for t, exe, r in tools]
        if pyrt is None:
            life[0].unavailable = boot[0].unavailable = "pyrun-runtime not built (ci/setup.sh)"
    return [
        Case("oci", "busybox `true`: create + start + delete -f", life, setup_error=error),
        Case("oci", "per-call start-up: state of a missing container", boot, setup_error=error),
    ]


# --------------------------------------------------------------------------------------------
# capability: scale


SCALE_COUNT: Final = (100, 10)  # containers per tool and round: (full, --quick)
SCALE_CMD: Final = ("sleep", "1000")
MB: Final = 1_000_000
PSS_GOAL_MB: Final = 1.0  # pyrun's goal per monitor (issue 3)
GONE_TIMEOUT: Final = 30.0  # seconds to wait, untimed, for a tool's processes to exit after rm


def _proc_argv(pid: str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []


def _live(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _procs_by_flag(exe: str, flag: str) -> dict[str, int]:
    """Container id -> pid of the processes named `exe` whose arguments hold `flag ID`."""
    found: dict[str, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        argv = _proc_argv(entry.name)
        if not argv or os.path.basename(argv[0]) != exe or flag not in argv[1:]:
            continue
        with contextlib.suppress(IndexError):
            found[argv[argv.index(flag) + 1]] = int(entry.name)
    return found


def _procs_mentioning(ids: Sequence[str]) -> list[int]:
    """Live processes whose command line holds one of the container ids (monitors, podman's
    `container cleanup`, ...); not this process."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        line = " ".join(_proc_argv(entry.name))
        if line and any(i in line for i in ids) and _live(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _smaps_kib(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/smaps_rollup (Pss, Rss, Private_Dirty, ...); {} if gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


@dataclass
class ScaleTool:
    """One tool of the scale capability: its two rows and how to drive it."""

    name: str  # "pyrun", "podman", "docker"
    monitor: str  # the per-container monitor's process name
    start: Contender  # row of the start case (its samples: seconds for the whole batch)
    remove: Contender  # row of the remove case
    run_one: Callable[[], str] | None = None  # start one detached `sleep`, return its full id
    remove_all: Callable[[list[str]], object] | None = None  # one `rm -f` with all the ids
    monitors: Callable[[list[str]], dict[str, int]] | None = None  # id -> monitor pid
    per_start: list[float] = field(default_factory=list)  # every timed start, seconds
    first: list[float] = field(default_factory=list)  # the first 10 starts of each timed batch
    last: list[float] = field(default_factory=list)  # the last 10 (up to 100 running)
    pss_mb: list[float] = field(default_factory=list)  # per round: Pss of monitors / containers
    uss_mb: list[float] = field(default_factory=list)  # same with Private_Clean + Private_Dirty
    found: list[str] = field(default_factory=list)  # per round: "k of n" when monitors are missing
    lingering: list[str] = field(default_factory=list)  # processes left after rm, per round

    def fail(self, reason: str) -> None:
        for c in (self.start, self.remove):
            c.unavailable = c.unavailable or reason


def _container_id(proc: subprocess.CompletedProcess[bytes], what: str) -> str:
    lines = proc.stdout.decode(errors="replace").split()
    cid = lines[-1] if lines else ""
    if len(cid) != 64 or any(ch not in "0123456789abcdef" for ch in cid):
        raise RuntimeError(f"{what} printed no container id: {_tail(proc.stdout + proc.stderr)}")
    return cid


def _scale_pyrun(ctx: Context, src: Path, n: int) -> ScaleTool:
    cli = _pyrun_cli()
    cli_note = _pyrun_cli_note(cli)
    t = ScaleTool(
        "pyrun",
        "pyrun-runtime monitor",
        Contender("pyrun run -d", "CLI", role="pyrun", note=cli_note),
        Contender("pyrun rm -f", "CLI", role="pyrun", note=f"{cli_note}; one call, {n} ids"),
    )
    if ctx.core_error is not None:
        t.fail(ctx.core_error)
        return t
    try:
        store = _pyrun_store(ctx, src)
    except CommandFailed as e:
        t.fail(f"pyrun import failed: {e}")
        return t
    base: list[str | Path] = [*cli, "--root", store]
    run = [*base, "run", "-d", "--network", "none", PYRUN_START_REF, *SCALE_CMD]
    t.run_one = lambda: _container_id(run_cmd(run, env=_child_env), "pyrun run -d")
    t.remove_all = lambda ids: run_cmd([*base, "rm", "-f", *ids], env=_child_env)

    def monitors(ids: list[str]) -> dict[str, int]:
        found = {}
        for cid in ids:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                state = json.loads((store / "containers" / cid / "state.json").read_text())
                found[cid] = int(state["monitor_pid"])
        return found

    t.monitors = monitors

    def leftovers() -> None:  # containers of an interrupted run (their mounts are in the store)
        argv = [str(a) for a in base]
        ps = subprocess.run([*argv, "ps", "-aq"], capture_output=True, env=_child_env, check=False)
        if ids := ps.stdout.decode().split():
            rm = [*argv, "rm", "-f", *ids]
            subprocess.run(rm, capture_output=True, env=_child_env, check=False)

    ctx.cleanups.append(leftovers)
    return t


def _scale_podman(ctx: Context, src: Path, n: int) -> ScaleTool:
    store = "store on the scratch fs; " if ctx.podman_store else ""
    t = ScaleTool(
        "podman",
        "conmon",
        Contender("podman run -d", "CLI", note=f"--runtime runc; {store}image of start"),
        Contender(
            "podman rm -f -t 0",
            "CLI",
            note=f"one call, {n} ids; -t 0: SIGKILL at once like docker rm -f (podman's default "
            "waits 10 s for SIGTERM, which `sleep` as PID 1 ignores)",
        ),
    )
    try:
        podman = _podman_image(ctx, src)
    except (Unavailable, CommandFailed) as e:
        t.fail(str(e))
        return t
    run = [*podman, "run", "-d", "--runtime", "runc", "--network", "none", PODMAN_START_IMAGE]
    t.run_one = lambda: _container_id(run_cmd([*run, *SCALE_CMD]), "podman run -d")
    t.remove_all = lambda ids: run_cmd([*podman, "rm", "-f", "-t", "0", *ids])
    t.monitors = lambda ids: {
        k: v for k, v in _procs_by_flag("conmon", "-c").items() if k in set(ids)
    }

    def leftovers() -> None:  # containers of an interrupted run, before _podman_image's rmi
        ps = [*podman, "ps", "-aq", "--no-trunc", "--filter", f"ancestor={PODMAN_START_IMAGE}"]
        proc = subprocess.run(ps, capture_output=True, check=False)
        if ids := proc.stdout.decode().split():
            rm = [*podman, "rm", "-f", "-t", "0", *ids]
            subprocess.run(rm, capture_output=True, check=False)

    ctx.cleanups.append(leftovers)
    return t


def _scale_docker(ctx: Context, src: Path, n: int) -> ScaleTool:
    t = ScaleTool(
        "docker",
        "containerd-shim-runc-v2",
        Contender("docker run -d", "CLI", note="image of start"),
        Contender("docker rm -f", "CLI", note=f"one call, {n} ids"),
    )
    try:
        docker, driver = _docker_image(ctx, src)
    except (Unavailable, CommandFailed) as e:
        t.fail(str(e))
        return t
    t.start.note += f"; daemon's storage driver {driver}"
    if driver.startswith("fuse-overlayfs"):
        t.start.note += " (its FUSE process per container is not counted with the monitor)"
    run = [docker, "run", "-d", "--network", "none", DOCKER_START_IMAGE, *SCALE_CMD]
    t.run_one = lambda: _container_id(run_cmd(run), "docker run -d")
    t.remove_all = lambda ids: run_cmd([docker, "rm", "-f", *ids])
    t.monitors = lambda ids: {
        k: v for k, v in _procs_by_flag("containerd-shim-runc-v2", "-id").items() if k in set(ids)
    }
    return t  # leftovers: _docker_image's clean-up (rm -f of the image's containers)


def _scale_batch(t: ScaleTool, count: int, timed: bool) -> tuple[float, float]:
    """Start `count` containers one after the other, measure their monitors' memory, remove them
    with one `rm -f`; returns (seconds for the starts, seconds for the removal). Whatever was
    started is removed (untimed, errors ignored) when a step fails."""
    assert t.run_one is not None and t.remove_all is not None and t.monitors is not None
    ids: list[str] = []
    try:
        starts = []
        for _ in range(count):
            with _signals_deferred():
                t0 = time.perf_counter()
                ids.append(t.run_one())
                starts.append(time.perf_counter() - t0)
        pids = t.monitors(ids)
        if timed:
            distinct = sorted(set(pids.values()))
            rollups = [_smaps_kib(p) for p in distinct]
            pss = sum(r.get("Pss", 0) for r in rollups) * 1024 / MB
            uss = sum(r.get("Private_Clean", 0) + r.get("Private_Dirty", 0) for r in rollups)
            t.pss_mb.append(pss / count)
            t.uss_mb.append(uss * 1024 / MB / count)
            if len(pids) != count or len(distinct) != count:
                t.found.append(f"{len(distinct)} monitor processes for {count} containers")
            t.per_start.extend(starts)
            t.first.extend(starts[:10])
            t.last.extend(starts[-10:])
        os.sync()
        t0 = time.perf_counter()
        t.remove_all(ids)
        removal = time.perf_counter() - t0
        removed, ids = ids, []
        deadline = time.monotonic() + GONE_TIMEOUT
        while (left := _procs_mentioning(removed)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            t.lingering.append(f"{len(left)} processes still alive {GONE_TIMEOUT:.0f} s after rm")
        return sum(starts), removal
    finally:
        if ids and t.remove_all is not None:
            with contextlib.suppress(Exception):
                t.remove_all(ids)
        os.sync()


def _mb(x: float) -> str:
    return f"{x:.2f} MB"


def _scale_notes(tools: list[ScaleTool], n: int, rounds: int, warmups: int) -> None:
    """Notes and stderr lines once all rounds ran: per-start time, monitor memory, ratios."""
    base = next((t for t in tools if t.name == "pyrun" and t.pss_mb), None)
    base_pss = statistics.median(base.pss_mb) if base else None
    method = (
        f"{n} sequential `run -d --network none IMG sleep 1000` timed as one batch; "
        f"{rounds} timed round(s) of {n} starts"
    )
    method += f", after {warmups} warm-up start(s) and rm of 1 container" if warmups else ""
    for t in tools:
        t.start.note = f"{t.start.note}; {method}" if t.start.note else method
        if not t.pss_mb or t.start.unavailable:
            continue
        pss, uss = statistics.median(t.pss_mb), statistics.median(t.uss_mb)
        per = statistics.median(t.per_start)
        mem = f"monitor ({t.monitor}) PSS {_mb(pss)} each, USS {_mb(uss)}"
        if t is base:
            verdict = "met" if pss <= PSS_GOAL_MB else "NOT met"
            mem += f" (goal <= {PSS_GOAL_MB:g} MB: {verdict})"
        elif base_pss:
            mem += f" ({pss / base_pss:.2f}x pyrun's)"
        extra = "; ".join(t.found + t.lingering)
        first, last = statistics.median(t.first), statistics.median(t.last)
        per_line = f"{per:.3f} s per start (median; first 10 {first:.3f}, last 10 {last:.3f})"
        t.start.note += f"; {per_line}; {mem}" + (f"; {extra}" if extra else "")
        print(f"   {t.name} {mem}", file=sys.stderr, flush=True)


def run_scale(ctx: Context, rounds: int, warmups: int) -> list[Row]:
    """`rounds` interleaved rounds (order rotated) in which each tool in turn starts N detached
    containers, has its monitors measured and removes them all; a warm-up round does 1."""
    n = SCALE_COUNT[1 if ctx.quick else 0]
    start_case = Case("scale", f"start {n} detached `sleep`", [])
    remove_case = Case("scale", f"remove {n} (one rm -f)", [])
    print(f"== scale: {n} detached `sleep` per tool and round", file=sys.stderr, flush=True)
    images = _images_module()
    try:
        src: Path = images.busybox_tar()
        ctx.inputs["scale"] = (
            f"{src} ({human_bytes(src.stat().st_size)}), {n} x `sleep 1000` per tool and round"
        )
        warm(src)
    except (images.ImageUnavailable, OSError) as e:
        src = Path("/nonexistent")
        start_case.setup_error = f"test image missing: {_tail(str(e), 2)}"
        remove_case.setup_error = start_case.setup_error
    builders = (_scale_pyrun, _scale_podman, _scale_docker)
    tools = []
    for build in builders:
        if start_case.setup_error is None:
            tools.append(build(ctx, src, n))
        else:
            tools.append(ScaleTool("", "", Contender("", "CLI"), Contender("", "CLI")))
    names = [
        ("pyrun run -d", "pyrun rm -f"),
        ("podman run -d", "podman rm -f -t 0"),
        ("docker run -d", "docker rm -f"),
    ]
    for t, (start_name, rm_name) in zip(tools, names, strict=True):
        t.start.tool, t.remove.tool = t.start.tool or start_name, t.remove.tool or rm_name
        start_case.contenders.append(t.start)
        remove_case.contenders.append(t.remove)
    active = [t for t in tools if t.run_one is not None and t.start.unavailable is None]
    for rnd in range(warmups + rounds):
        timed = rnd >= warmups
        count = n if timed else 1
        shift = rnd % len(active) if active else 0
        for t in active[shift:] + active[:shift]:
            if t.start.unavailable is not None:
                continue
            try:
                up, down = _scale_batch(t, count, timed)
            except Exception as e:
                t.fail(f"failed: {e}" if isinstance(e, CommandFailed) else f"failed: {e!r}")
                print(f"   {t.name}: {t.start.unavailable}", file=sys.stderr, flush=True)
                continue
            if timed:
                t.start.samples.append(up)
                t.remove.samples.append(down)
            kind = f"round {rnd - warmups + 1}" if timed else "warm-up"
            for c, secs in ((t.start, up), (t.remove, down)):
                label = f"{c.tool} x{count}"
                print(f"   {kind:8} {label:32} {secs:8.3f} s", file=sys.stderr, flush=True)
    _scale_notes(tools, n, rounds, warmups)
    start_rows, remove_rows = _rows(start_case), _rows(remove_case)
    for t, row in zip(tools, start_rows, strict=True):
        if row.reason is None and t.pss_mb:
            row.metrics = {
                "monitor_pss_mb": round(statistics.median(t.pss_mb), 3),
                "monitor_uss_mb": round(statistics.median(t.uss_mb), 3),
                "containers": n,
                "per_start_median_s": round(statistics.median(t.per_start), 4),
                "first_10_starts_median_s": round(statistics.median(t.first), 4),
                "last_10_starts_median_s": round(statistics.median(t.last), 4),
            }
    return start_rows + remove_rows


# --------------------------------------------------------------------------------------------
# capabilities: pull and push, through a registry on 127.0.0.1


PULL_REPO: Final = "bench/debian"  # the repository of the pulled image in the pull registry
PULL_EXTRA_LAYERS: Final = 5  # layers committed on top of the base image, one file each
PULL_LAYER_BYTES: Final = (4 * MiB, 1 * MiB)  # random bytes per extra layer: (full, --quick)
PULL_GOAL: Final = 0.5  # pyrun pull's goal: at most this fraction of docker pull's time (issue 4)
REGISTRY_LISTEN_TIMEOUT: Final = 30.0
MANIFEST_TYPES: Final = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRegistry:
    """A docker-registry (distribution) process serving plain HTTP on 127.0.0.1, its storage on
    the scratch filesystem."""

    host: str  # 127.0.0.1:PORT
    storage: Path  # the filesystem driver's rootdirectory
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wipe(self) -> None:
        """Delete every repository and blob: the next push finds nothing to reuse or mount."""
        remove_tree(self.storage / "docker")

    def blob_path(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def manifest(self, repo: str, tag: str) -> dict[str, Any]:
        """The image manifest REPO:TAG, straight from the registry's API (no proxy)."""
        req = urllib.request.Request(
            f"http://{self.host}/v2/{repo}/manifests/{tag}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=30) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc


def _listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + REGISTRY_LISTEN_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.02)
            continue
        time.sleep(0.05)  # a port taken by someone else: our registry exits at once
        return proc.poll() is None
    return False


def start_registry(ctx: Context, name: str) -> LocalRegistry:
    """`docker-registry serve CONFIG` (distribution 2.8) on a free port of 127.0.0.1, storage
    and log in the scratch space, stopped by the run's clean-up; raises Unavailable or
    CommandFailed (with the log's tail) when it does not listen."""
    exe = tool_path("docker-registry")
    base = ctx.work / f"registry-{name}"
    base.mkdir()
    storage, config, log = base / "storage", base / "config.yml", base / "log"
    why = "(no output)"
    for _attempt in range(3):  # another process may take the port between probe and bind
        port = _free_port()
        config.write_text(
            "version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: 127.0.0.1:{port}}}\n"
        )
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [exe, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        reg = LocalRegistry(f"127.0.0.1:{port}", storage, proc)
        if _listening(port, proc):
            ctx.cleanups.append(reg.stop)
            return reg
        reg.stop()
        why = _tail(log.read_bytes())
    raise CommandFailed(f"docker-registry did not listen on 127.0.0.1: {why}")


@dataclass
class PullImage:
    """The image that pull and push move: a base rootfs plus PULL_EXTRA_LAYERS committed layers,
    built once per run in a scratch pyrun store and pushed to the pull registry."""

    registry: LocalRegistry
    store: Path  # the pyrun store that built it
    tag: str  # its name there
    ref: str  # REGISTRY/bench/debian:1
    image_id: str  # sha256:<config digest>
    diff_ids: list[str]
    layers: list[tuple[str, int]]  # (digest, size) of the compressed layers, from the manifest
    marker: str  # the file the last layer adds, e.g. "layer5.bin"
    marker_size: int
    unpacked: int  # bytes of the unpacked image (pyrun image inspect's Size)

    @property
    def compressed(self) -> int:
        return sum(size for _, size in self.layers)

    def describe(self) -> str:
        sizes = ", ".join(human_bytes(s) for _, s in self.layers)
        return (
            f"{len(self.layers)} layers, {human_bytes(self.compressed)} compressed ({sizes}), "
            f"{human_bytes(self.unpacked)} unpacked"
        )


def _unique_base(ctx: Context, src: Path) -> Path:
    """A copy of the rootfs tar `src` with one file of random content added, gzip -6 like the
    Debian base, so that no layer of the image is already in docker's or podman's store (the
    start capability imports busybox.tar into both): a tool would skip the download and
    extraction of a layer it has."""
    plain, out = ctx.work / "pull-base.tar", ctx.work / "pull-base.tar.gz"
    shutil.copyfile(src, plain)
    data = os.urandom(16).hex().encode()
    info = tarfile.TarInfo("etc/pull-bench")
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    with tarfile.open(plain, "a") as tar:
        tar.addfile(info, io.BytesIO(data))
    with open(plain, "rb") as f, gzip.open(out, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(f, dst, MiB)
    plain.unlink()
    return out


def _pyrun_leftovers(store: Path) -> None:
    """Remove the containers left in a scratch store (a setup step interrupted between run and
    rm): their mounts would hold the scratch filesystem."""
    argv = [str(a) for a in (*_pyrun_cli(), "--root", store)]
    ps = subprocess.run([*argv, "ps", "-aq"], capture_output=True, env=_child_env, check=False)
    if ids := ps.stdout.decode().split():
        subprocess.run([*argv, "rm", "-f", *ids], capture_output=True, env=_child_env, check=False)


def pull_image(ctx: Context) -> PullImage:
    """Build the image once per run (untimed; pull and push share it): import the base (Debian
    minbase .tar.gz; with --quick busybox plus a file of random bytes), then for each extra layer
    `pyrun run` a container that writes N random bytes to /layerI.bin and `pyrun commit` it;
    push it to the pull registry. Raises Unavailable or CommandFailed (remembered: the second
    capability gets the same reason without a second try)."""
    got = ctx.prepared.get("pull image")
    if isinstance(got, PullImage):
        return got
    if isinstance(got, str):
        raise Unavailable(got)
    try:
        img = _build_pull_image(ctx)
    except (Unavailable, CommandFailed) as e:
        ctx.prepared["pull image"] = str(e)
        raise
    except (OSError, ValueError, KeyError, TypeError, tarfile.TarError) as e:
        ctx.prepared["pull image"] = f"cannot build the image: {e!r}"
        raise Unavailable(ctx.prepared["pull image"]) from None
    ctx.prepared["pull image"] = img
    return img


def _build_pull_image(ctx: Context) -> PullImage:
    if ctx.core_error is not None:
        raise Unavailable(ctx.core_error)
    images = _images_module()
    try:
        src: Path = images.busybox_tar() if ctx.quick else images.debian_tar("gz")
    except images.ImageUnavailable as e:
        raise Unavailable(f"test image missing: {_tail(str(e), 2)}") from None
    base = _unique_base(ctx, src) if ctx.quick else src
    warm(base)
    store = ctx.work / "pull-store"
    pyrun: list[str | Path] = [*_pyrun_cli(), "--root", store]
    ctx.cleanups.append(lambda: _pyrun_leftovers(store))
    nbytes = PULL_LAYER_BYTES[1 if ctx.quick else 0]
    run_cmd([*pyrun, "import", base, "src:1"], env=_child_env)
    for i in range(1, PULL_EXTRA_LAYERS + 1):
        name = f"pull-layer-{i}"
        write = f"head -c {nbytes} /dev/urandom > /layer{i}.bin"
        run = ["run", "--name", name, "--network", "none", f"src:{i}", "sh", "-c", write]
        run_cmd([*pyrun, *run], env=_child_env)
        run_cmd([*pyrun, "commit", name, f"src:{i + 1}"], env=_child_env)
        run_cmd([*pyrun, "rm", name], env=_child_env)
    tag = f"src:{PULL_EXTRA_LAYERS + 1}"
    reg = start_registry(ctx, "pull")
    ref = f"{reg.host}/{PULL_REPO}:1"
    run_cmd([*pyrun, "tag", tag, ref], env=_child_env)
    run_cmd([*pyrun, "push", "-q", ref], env=_child_env)
    manifest = reg.manifest(PULL_REPO, "1")
    inspect = json.loads(run_cmd([*pyrun, "image", "inspect", tag], env=_child_env).stdout)
    attrs = inspect[0] if isinstance(inspect, list) else inspect
    layers = [(str(layer["digest"]), int(layer["size"])) for layer in manifest["layers"]]
    for digest, _ in layers:
        warm(reg.blob_path(digest))  # just written: in the page cache anyway
    img = PullImage(
        registry=reg,
        store=store,
        tag=tag,
        ref=ref,
        image_id=str(attrs["Id"]),
        diff_ids=[str(d) for d in attrs["RootFS"]["Layers"]],
        layers=layers,
        marker=f"layer{PULL_EXTRA_LAYERS}.bin",
        marker_size=nbytes,
        unpacked=int(attrs["Size"]),
    )
    if len(img.diff_ids) != len(layers) or str(manifest["config"]["digest"]) != img.image_id:
        raise Unavailable(f"the registry's manifest of {ref} does not match the store's image")
    label = "busybox (+1 random file)" if ctx.quick else "Debian minbase .tar.gz"
    ctx.inputs["pull image"] = (
        f"{ref}: {label} imported by pyrun, plus {PULL_EXTRA_LAYERS} layers of "
        f"{human_bytes(nbytes)} of random bytes each (pyrun run + commit): {img.describe()}"
    )
    return img


def _check_store_pull(img: PullImage, sub: str) -> CheckFn:
    """Every layer of the image unpacked in the pyrun store WD/SUB, the last one complete."""

    def check(wd: Path, _result: object) -> None:
        layers = wd / sub / "layers" / "sha256"
        missing = [d for d in img.diff_ids if not (layers / d.removeprefix("sha256:")).is_dir()]
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(img.diff_ids)} layers not unpacked")
        last = layers / img.diff_ids[-1].removeprefix("sha256:") / "diff" / img.marker
        if not last.is_file() or last.stat().st_size != img.marker_size:
            raise RuntimeError(f"{last} missing or incomplete after the pull")

    return check


def _image_ids(argv: list[str]) -> dict[str, dict[str, Any]]:
    """Image id -> `image inspect` object for every image of docker or podman (argv prefix)."""
    ids = sorted(set(run_cmd([*argv, "images", "-q", "--no-trunc"]).stdout.decode().split()))
    if not ids:
        return {}
    docs = json.loads(run_cmd([*argv, "image", "inspect", *ids]).stdout)
    return {str(d.get("Id", "")): d for d in docs if isinstance(d, dict)}


def _prepare_engine_pull(argv: list[str], img: PullImage, tool: str) -> None:
    """Remove what an interrupted run of this script left in docker's or podman's store (the
    image under any registry port), then refuse to run when another image there has one of the
    image's layers: the pull would skip it. Raises Unavailable or CommandFailed."""
    repo = "/" + PULL_REPO + ":"
    docs = _image_ids(argv)
    ours = [
        t
        for d in docs.values()
        for t in d.get("RepoTags") or []
        if t.startswith("127.0.0.1:") and repo in t
    ]
    if ours:
        run_cmd([*argv, "rmi", "--force", *ours])
        docs = _image_ids(argv)
    wanted = set(img.diff_ids)
    for d in docs.values():
        shared = wanted & set((d.get("RootFS") or {}).get("Layers") or [])
        if shared:
            name = ", ".join(d.get("RepoTags") or []) or str(d.get("Id", "?"))[:19]
            raise Unavailable(
                f"{tool}'s image {name} already has {len(shared)} of the image's layers, which a "
                "pull would skip"
            )


def _engine_pull(ctx: Context, img: PullImage, tool: str) -> Contender:
    """`docker pull` or `podman pull` (podman's store on the scratch fs when there is one), then
    `rmi` (untimed); checked by the pulled image's id."""
    store = "store on the scratch fs; " if ctx.podman_store and tool == "podman" else ""
    c = Contender(f"{tool} pull", "CLI")
    try:
        argv = [tool_path(tool), *(ctx.podman_store if tool == "podman" else [])]
        if tool == "docker":
            fmt = "{{.Driver}} in {{.DockerRootDir}} (not the scratch fs)"
            where = run_cmd([*argv, "info", "--format", fmt]).stdout.decode().strip()
            flags = ["-q"]
        else:
            fmt = "{{.Store.GraphDriverName}}"
            where = run_cmd([*argv, "info", "--format", fmt]).stdout.decode().strip()
            flags = ["-q", "--tls-verify=false"]
        _prepare_engine_pull(argv, img, tool)
    except (Unavailable, CommandFailed) as e:
        c.unavailable = str(e)
        return c
    plain = "127.0.0.0/8 is an insecure registry by default" if tool == "docker" else "plain HTTP"
    c.note = (
        f"{store}storage driver {where}; {plain}; unpacks every layer; then {tool} rmi, untimed"
    )

    def cleanup() -> None:  # after an interrupted round
        subprocess.run([*argv, "rmi", "--force", img.ref], capture_output=True, check=False)

    ctx.cleanups.append(cleanup)

    def check(_wd: Path, _result: object) -> None:
        got = run_cmd([*argv, "image", "inspect", "--format", "{{.Id}}", img.ref]).stdout
        got_id = got.decode().strip()
        if got_id.removeprefix("sha256:") != img.image_id.removeprefix("sha256:"):
            raise RuntimeError(f"{tool} pulled image {got_id}, expected {img.image_id}")

    def rmi(_wd: Path, _n: int) -> None:
        run_cmd([*argv, "rmi", img.ref])

    c.run = lambda _wd, _n: run_cmd([*argv, "pull", *flags, img.ref])
    c.check, c.after = check, rmi
    return c


def _skopeo_umoci_pull(img: PullImage) -> tuple[Contender, list[float]]:
    """`skopeo copy` from the registry to an OCI layout, then `umoci unpack` of it to a runtime
    bundle, timed together; the returned list gets the seconds skopeo took in each timed run."""
    c = Contender(
        "skopeo copy + umoci unpack",
        "CLI",
        note="docker:// -> oci: layout (--src-tls-verify=false), then unpack to a bundle",
    )
    copy_s: list[float] = []
    try:
        skopeo, umoci = tool_path("skopeo"), tool_path("umoci")
    except Unavailable as e:
        c.unavailable = str(e)
        return c, copy_s
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    copy = [skopeo, "copy", "-q", "--src-tls-verify=false"]

    def run(wd: Path, _n: int) -> object:
        layout = f"{wd / 'layout'}:1"
        t0 = time.perf_counter()
        run_cmd([*copy, f"docker://{img.ref}", f"oci:{layout}"])
        copy_s.append(time.perf_counter() - t0)
        return run_cmd([umoci, "unpack", *rootless, "--image", layout, wd / "bundle"])

    def check(wd: Path, _result: object) -> None:
        _check_rootfs("bundle/rootfs")(wd, None)
        last = wd / "bundle" / "rootfs" / img.marker
        if not last.is_file() or last.stat().st_size != img.marker_size:
            raise RuntimeError(f"{last} missing or incomplete after umoci unpack")

    c.run, c.check = run, check
    return c, copy_s


def pull_cases(ctx: Context) -> list[Case]:
    """Pull the image from the registry on 127.0.0.1 until it is ready to run."""
    name = "busybox" if ctx.quick else "debian"
    case = Case("pull", f"{name} image, {1 + PULL_EXTRA_LAYERS} layers, registry to unpacked", [])
    cli = _pyrun_cli()
    cli_note = _pyrun_cli_note(cli)
    pyrun_cli = Contender(
        "pyrun pull",
        "CLI",
        role="pyrun",
        note=f"{cli_note}; fresh store each run; 3 layers at a time, each streamed into extraction",
    )
    pyrun_api = Contender(
        "pyrun Client.images.pull",
        "in-process",
        role="info",
        note="fresh store each run; no interpreter start",
    )
    try:
        img = pull_image(ctx)
    except (Unavailable, CommandFailed) as e:
        case.setup_error = str(e)
        case.contenders = [pyrun_cli, pyrun_api] + [
            Contender(t, "CLI")
            for t in ("docker pull", "podman pull", "skopeo copy + umoci unpack")
        ]
        return [case]
    case.name = f"{name} image, {len(img.layers)} layers, registry to unpacked"
    ref = img.ref

    def client_pull(wd: Path, _n: int) -> object:
        from pyrun.client import Client

        return Client(wd / "store").images.pull(ref)

    pyrun_cli.run = lambda wd, _n: run_cmd(
        [*cli, "--root", wd / "store", "pull", "-q", ref], env=_child_env
    )
    pyrun_cli.check = _check_store_pull(img, "store")
    pyrun_api.run, pyrun_api.check = client_pull, _check_store_pull(img, "store")
    skopeo_umoci, copy_s = _skopeo_umoci_pull(img)
    docker_c = _engine_pull(ctx, img, "docker")
    case.contenders = [
        pyrun_cli,
        docker_c,
        _engine_pull(ctx, img, "podman"),
        skopeo_umoci,
        pyrun_api,
    ]

    def finish(rows: list[Row]) -> None:
        by_tool = {r.tool: r for r in rows}
        base, docker = by_tool["pyrun pull"], by_tool["docker pull"]
        if base.median is not None and docker.median:
            share = base.median / docker.median
            verdict = "met" if share <= PULL_GOAL else "NOT met"
            base.note += f"; {share:.2f}x docker pull's time (goal <= {PULL_GOAL:g}x: {verdict})"
            print(f"   pyrun pull / docker pull: {share:.2f}x ({verdict})", file=sys.stderr)
        both = by_tool["skopeo copy + umoci unpack"]
        timed = copy_s[-len(both.samples) :] if both.samples else []
        if both.median is not None and timed:
            copy = statistics.median(timed)
            unpack = statistics.median(t - s for t, s in zip(both.samples, timed, strict=True))
            both.note += f"; skopeo copy {copy:.3f} s, umoci unpack {unpack:.3f} s (medians)"

    case.finish = finish
    return [case]


def _check_pushed(reg: LocalRegistry, img: PullImage, c: Contender) -> CheckFn:
    """The registry (emptied before the run) serves REPO:1, REPO being what the run returned,
    with as many layers as the image, each blob stored whole: every byte went over the wire.
    Layers that differ from the store's (a tool that compressed again) go into c's note."""

    def check(_wd: Path, repo: object) -> None:
        manifest = reg.manifest(str(repo), "1")
        got = [(str(layer["digest"]), int(layer["size"])) for layer in manifest["layers"]]
        if len(got) != len(img.layers):
            raise RuntimeError(f"{reg.host}/{repo}:1 has {len(got)} layers, not {len(img.layers)}")
        for digest, size in got:
            path = reg.blob_path(digest)
            if not path.is_file() or path.stat().st_size != size:
                raise RuntimeError(f"the registry holds no complete blob {digest[:19]}")
        other = sum(g != want for g, want in zip(got, img.layers, strict=True))
        flag = f"{other} layer(s) pushed with other digests than the store's (compressed again)"
        if other and flag not in c.note:
            c.note += f"; {flag}"

    return check


def _engine_push(
    ctx: Context,
    img: PullImage,
    reg: LocalRegistry,
    tool: str,
    pushing: Callable[[str, Callable[[str], object]], RunFn],
    target: Callable[[str, int], str],
) -> Contender:
    """`docker push` or `podman push` (podman's store on the scratch fs when there is one) of the
    image, pulled once (untimed) from the pull registry into the engine's store and tagged for
    the push registry before each run (untimed); the tag and the registry's contents removed
    after each run, the image at the end."""
    empty = "registry emptied before each run (untimed), new repository each run"
    store = "store on the scratch fs; " if ctx.podman_store and tool == "podman" else ""
    c = Contender(
        f"{tool} push",
        "CLI",
        note=f"{store}image pulled once (untimed); compresses the layers again; {empty}",
    )
    argv = [tool_path(tool), *(ctx.podman_store if tool == "podman" else [])]
    tls = ["--tls-verify=false"] if tool == "podman" else []

    def cleanup() -> None:
        subprocess.run([*argv, "rmi", "--force", img.ref], capture_output=True, check=False)

    try:
        _prepare_engine_pull(argv, img, tool)  # what an interrupted run left
        run_cmd([*argv, "pull", "-q", *tls, img.ref])
    except (Unavailable, CommandFailed) as e:
        c.unavailable = str(e)
        cleanup()
        return c
    ctx.cleanups.append(cleanup)

    def before(_wd: Path, n: int) -> None:
        reg.wipe()
        run_cmd([*argv, "tag", img.ref, target(tool, n)])

    def after(_wd: Path, n: int) -> None:
        reg.wipe()
        run_cmd([*argv, "rmi", target(tool, n)])

    c.before, c.after = before, after
    c.run = pushing(tool, lambda name: run_cmd([*argv, "push", "-q", *tls, name]))
    c.check = _check_pushed(reg, img, c)
    return c


def push_cases(ctx: Context) -> list[Case]:
    """Push the pull capability's image to an empty registry on 127.0.0.1."""
    name = "busybox" if ctx.quick else "debian"
    case = Case("push", f"{name} image, {1 + PULL_EXTRA_LAYERS} layers, store to registry", [])
    cli = _pyrun_cli()
    cli_note = _pyrun_cli_note(cli)
    empty = "registry emptied before each run (untimed), new repository each run"
    pyrun_cli = Contender(
        "pyrun push", "CLI", role="pyrun", note=f"{cli_note}; from the store that built it; {empty}"
    )
    pyrun_api = Contender(
        "pyrun Client.images.push", "in-process", role="info", note="no interpreter start"
    )
    skopeo_c = Contender(
        "skopeo copy", "CLI", note=f"oci: layout (exported once by pyrun) -> docker://; {empty}"
    )
    engines = [Contender(f"{t} push", "CLI") for t in ("docker", "podman")]
    case.contenders = [pyrun_cli, skopeo_c, *engines, pyrun_api]
    try:
        img = pull_image(ctx)
        reg = start_registry(ctx, "push")
    except (Unavailable, CommandFailed) as e:
        case.setup_error = str(e)
        return [case]
    case.name = f"{name} image, {len(img.layers)} layers, store to empty registry"
    ctx.inputs["push"] = f"{img.tag} of the pull image's store, to a second registry"
    pyrun: list[str | Path] = [*cli, "--root", img.store]

    def target(prefix: str, n: int) -> str:
        return f"{reg.host}/{prefix}/r{n}:1"

    def pushing(prefix: str, push: Callable[[str], object]) -> RunFn:
        def run(_wd: Path, n: int) -> object:
            push(target(prefix, n))
            return f"{prefix}/r{n}"  # for the check

        return run

    def tagger(prefix: str) -> AfterFn:
        def before(_wd: Path, n: int) -> None:
            reg.wipe()  # also done after each run: nothing of an earlier run may be reused
            run_cmd([*pyrun, "tag", img.tag, target(prefix, n)], env=_child_env)

        return before

    def untagger(prefix: str) -> AfterFn:
        def after(_wd: Path, n: int) -> None:
            reg.wipe()
            run_cmd([*pyrun, "rmi", target(prefix, n)], env=_child_env)

        return after

    def client_push(name: str) -> object:
        from pyrun.client import Client

        return Client(img.store).images.push(name)

    pyrun_cli.run = pushing(
        "push", lambda name: run_cmd([*pyrun, "push", "-q", name], env=_child_env)
    )
    pyrun_api.run = pushing("api", client_push)
    for c, prefix in ((pyrun_cli, "push"), (pyrun_api, "api")):
        c.before, c.after, c.check = tagger(prefix), untagger(prefix), _check_pushed(reg, img, c)
    for i, tool in enumerate(("docker", "podman")):
        try:
            engines[i] = _engine_push(ctx, img, reg, tool, pushing, target)
        except Unavailable as e:
            engines[i].unavailable = str(e)
    case.contenders = [pyrun_cli, skopeo_c, *engines, pyrun_api]
    try:
        skopeo = tool_path("skopeo")
        layout = ctx.work / "push-layout"
        run_cmd([*pyrun, "image", "copy", img.tag, f"oci:{layout}:1"], env=_child_env)
        for blob in (layout / "blobs" / "sha256").iterdir():
            warm(blob)
    except (Unavailable, CommandFailed, OSError) as e:
        skopeo_c.unavailable = str(e)
        return [case]
    copy = [skopeo, "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:1"]
    skopeo_c.before = skopeo_c.after = lambda _wd, _n: reg.wipe()
    skopeo_c.run = pushing("skopeo", lambda name: run_cmd([*copy, f"docker://{name}"]))
    skopeo_c.check = _check_pushed(reg, img, skopeo_c)
    return [case]


# --------------------------------------------------------------------------------------------
# capability: build


BUILD_CONTEXT: Final = REPO / "examples" / "hello"
PYRUN_BUILD_TAG: Final = "bench/hello:1"
DOCKER_BUILD_TAG: Final = "pyrun-bench/hello:1"
BUILDAH_BUILD_TAG: Final = "localhost/bench-hello"
NOOP_GOAL_S: Final = 0.1  # pyrun's no-op rebuild: at most this many seconds (issue 5)
NOOP_GOAL_DOCKER: Final = 0.2  # ... and at most this fraction of docker's no-op rebuild
COLD_GOAL_DOCKER: Final = 1.0  # pyrun's cold build: at most this fraction of docker's


def _build_steps() -> int:
    """Instructions of the example's Dockerfile (continuation lines joined, comments skipped)."""
    text = (BUILD_CONTEXT / "Dockerfile").read_text().replace("\\\n", " ")
    return sum(1 for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))


def _all_image_ids(argv: list[str]) -> set[str]:
    """Every image id (intermediate ones included) of docker or podman/buildah (argv prefix)."""
    out = run_cmd([*argv, "images", "-aq", "--no-trunc"]).stdout.decode().split()
    return {i.removeprefix("sha256:") for i in out}


def _remove_new_images(argv: list[str], before: set[str]) -> None:
    """Remove the images made since `before` (the builds' results and intermediate images):
    children first, so a few passes, until no pass removes anything."""
    while True:
        new = _all_image_ids(argv) - before
        if not new:
            return
        gone = 0
        for image in sorted(new):
            proc = subprocess.run([*argv, "rmi", "-f", image], capture_output=True, check=False)
            gone += proc.returncode == 0
        if not gone:
            raise RuntimeError(f"cannot remove {len(new)} image(s) made by the builds")


def _image_id(out: bytes) -> str:
    lines = out.decode(errors="replace").split()
    return lines[-1].removeprefix("sha256:") if lines else ""


def _same_id_check() -> CheckFn:
    """A no-op rebuild must give the image id of the case's first (warm-up) build."""
    first: list[str] = []

    def check(_wd: Path, result: object) -> None:
        got = _image_id(result.stdout if isinstance(result, subprocess.CompletedProcess) else b"")
        if not got:
            raise RuntimeError("the build printed no image id")
        if not first:
            first.append(got)
        elif got != first[0]:
            raise RuntimeError(f"no-op rebuild gave image {got[:12]}, not {first[0][:12]}")

    return check


def _build_contenders(ctx: Context, src: Path, cold: bool) -> list[Contender]:
    """pyrun build, docker build and buildah bud of the example, cold (--no-cache) or with the
    cache warm (the warm-up round builds it once); warm, the Python CLI alone (pyrun-py) as
    info too."""
    cli = _pyrun_cli()
    cli_note = _pyrun_cli_note(cli)
    what = "--no-cache" if cold else "same build again, cache warm; same image id checked"
    pyrun_c = Contender("pyrun build", "CLI", role="pyrun", note=f"{cli_note}; {what}")
    pyrun_py = Contender("pyrun-py build", "CLI", role="info", note=f"the Python CLI alone; {what}")
    docker_c = Contender("docker build", "CLI")
    buildah_c = Contender("buildah bud", "CLI")
    no_cache = ["--no-cache"] if cold else []
    try:
        store = _pyrun_store(ctx, src)
        argv: list[str | Path] = [*cli, "--root", store, "build", "-q", *no_cache]
        argv += ["-t", PYRUN_BUILD_TAG, "--build-arg", f"BASE={PYRUN_START_REF}", BUILD_CONTEXT]
        pyrun_c.run = lambda _wd, _n: run_cmd(argv, env=_child_env)
        pyrun_c.check = None if cold else _same_id_check()
        py_argv = [*_pyrun_python_cli(), *argv[len(cli) :]]
        pyrun_py.run = lambda _wd, _n: run_cmd(py_argv, env=_child_env)
        pyrun_py.check = None if cold else _same_id_check()
    except CommandFailed as e:
        pyrun_c.unavailable = pyrun_py.unavailable = f"pyrun import failed: {e}"

    try:
        docker, driver = _docker_image(ctx, src)
        # The engine may be shared: only the images these builds made are removed (by the id
        # each build printed; an image's untagged parents, the classic builder's intermediate
        # images, go with it), never images that merely appeared meanwhile.
        made: list[str] = []

        def remove_made(_wd: object = None, _n: object = None) -> None:
            while made:
                subprocess.run([docker, "rmi", "-f", made.pop()], capture_output=True)

        ctx.cleanups.append(remove_made)
        env = dict(os.environ)
        if subprocess.run([docker, "buildx", "version"], capture_output=True).returncode == 0:
            env["DOCKER_BUILDKIT"] = "1"
            builder = "BuildKit (DOCKER_BUILDKIT=1)"
        else:
            env["DOCKER_BUILDKIT"] = "0"
            builder = "classic builder (BuildKit needs the buildx plugin, missing here)"
        dargs = [docker, "build", "-q", *no_cache, "-t", DOCKER_BUILD_TAG]
        dargs += ["--build-arg", f"BASE={DOCKER_START_IMAGE}", str(BUILD_CONTEXT)]

        def docker_run(_wd: Path, _n: int) -> subprocess.CompletedProcess[bytes]:
            result = run_cmd(dargs, env=env)
            if (image := _image_id(result.stdout)) and image not in made:
                made.append(image)
            return result

        docker_c.run = docker_run
        docker_c.check = None if cold else _same_id_check()
        docker_c.note = f"{builder}; {what}; daemon's storage driver {driver}"
        if cold:  # every cold build starts from the same images: its results removed, untimed
            docker_c.after = remove_made
    except (Unavailable, CommandFailed) as e:
        docker_c.unavailable = str(e)

    try:
        buildah = [tool_path("buildah"), *ctx.podman_store]
        podman = _podman_image(ctx, src)
        key = "buildah build images"
        bbefore = ctx.prepared.get(key)
        if not isinstance(bbefore, set):
            bbefore = _all_image_ids(podman)
            ctx.prepared[key] = bbefore
            ctx.cleanups.append(lambda: _remove_new_images(podman, bbefore))
        bargs = [*buildah, "bud", "-q", "--layers", "--runtime", "runc", *no_cache]
        bargs += ["--build-arg", f"BASE={PODMAN_START_IMAGE}", "-t", BUILDAH_BUILD_TAG]
        buildah_c.run = lambda _wd, _n: run_cmd([*bargs, str(BUILD_CONTEXT)])
        buildah_c.check = None if cold else _same_id_check()
        store_note = "podman's store on the scratch fs; " if ctx.podman_store else ""
        buildah_c.note = f"--layers (its cache), --runtime runc; {store_note}{what}"
        if cold:
            buildah_c.after = lambda _wd, _n: _remove_new_images(podman, bbefore)
    except (Unavailable, CommandFailed) as e:
        buildah_c.unavailable = str(e)
    return [pyrun_c, docker_c, buildah_c] + ([] if cold else [pyrun_py])


def _build_verdicts(cold: bool) -> Callable[[list[Row]], None]:
    def finish(rows: list[Row]) -> None:
        by_tool = {r.tool: r for r in rows}
        base, docker = by_tool["pyrun build"], by_tool["docker build"]
        if base.median is None:
            return
        verdicts: list[str] = []
        if not cold:
            ok = "met" if base.median <= NOOP_GOAL_S else "NOT met"
            verdicts.append(f"{base.median:.3f} s (goal <= {NOOP_GOAL_S:g} s: {ok})")
        goal = COLD_GOAL_DOCKER if cold else NOOP_GOAL_DOCKER
        if docker.median:
            share = base.median / docker.median
            ok = "met" if share <= goal else "NOT met"
            verdicts.append(f"{share:.2f}x docker build's time (goal <= {goal:g}x: {ok})")
        else:
            verdicts.append(f"goal <= {goal:g}x docker build: not judged (docker not available)")
        base.note += "; " + "; ".join(verdicts)
        print(f"   pyrun build: {'; '.join(verdicts)}", file=sys.stderr)

    return finish


def build_cases(ctx: Context) -> list[Case]:
    """Build the example multi-stage Dockerfile: cold, then a no-op rebuild with the cache warm."""
    images = _images_module()
    name = f"examples/hello (2 stages, {_build_steps()} steps)"
    cases = [
        Case("build", f"{name}, cold build", [], finish=_build_verdicts(True)),
        Case("build", f"{name}, no-op rebuild", [], finish=_build_verdicts(False)),
    ]
    try:
        src: Path = images.busybox_tar()
        warm(src)
    except (images.ImageUnavailable, OSError) as e:
        for case in cases:
            case.setup_error = f"test image missing: {_tail(str(e), 2)}"
            case.contenders = [Contender(t, "CLI") for t in ("pyrun build", "docker build")]
            case.contenders.append(Contender("buildah bud", "CLI"))
        return cases
    ctx.inputs["build"] = (
        f"{BUILD_CONTEXT.relative_to(REPO)} with BASE = busybox imported once (untimed) from {src}"
    )
    for case, cold in zip(cases, (True, False), strict=True):
        case.contenders = list(_build_contenders(ctx, src, cold))
    return cases


# --------------------------------------------------------------------------------------------
# report


def _first_line_of(path: str, key: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    return "unknown"


def _fs_type(path: Path) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["stat", "-fc", "%T", str(path)], capture_output=True, text=True, check=True
        ).stdout.strip()
    return "unknown"


def machine_info(scratch_note: str) -> dict[str, str]:
    cgroup = _fs_type(Path("/sys/fs/cgroup"))
    mode = {"cgroup2fs": "v2 (unified)", "tmpfs": "v1 (legacy or hybrid)"}.get(cgroup, "unknown")
    mem_kb = _first_line_of("/proc/meminfo", "MemTotal").split()[0]
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    return {
        "cpu": _first_line_of("/proc/cpuinfo", "model name"),
        "cores": f"{os.cpu_count()} online, {affinity} usable by this process",
        "memory": human_bytes(int(mem_kb) * 1024) if mem_kb.isdigit() else "unknown",
        "kernel": platform.release(),
        "os": _first_line_of("/etc/os-release", "PRETTY_NAME").strip('"'),
        "cgroup": f"{cgroup} -> {mode}",
        "user": "root" if os.geteuid() == 0 else f"uid {os.geteuid()} (not root)",
        "scratch filesystem": scratch_note,
        "load average at start": _loadavg(),
    }


class CpuMeter:
    """CPU time the machine spent outside this benchmark (its own process and children) while it
    ran: a measure of how much other work competed with the contenders."""

    def __init__(self) -> None:
        self.busy0, self.ours0, self.wall0 = self._busy(), self._ours(), time.monotonic()

    @staticmethod
    def _busy() -> float:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return float("nan")
        ticks = [int(x) for x in fields[:8]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def report(self) -> str:
        busy = self._busy() - self.busy0
        ours = self._ours() - self.ours0
        wall = time.monotonic() - self.wall0
        other = max(busy - ours, 0.0)
        cpus = os.cpu_count() or 1
        share = 100 * other / (wall * cpus) if wall > 0 else 0.0
        return (
            f"{other:.0f} CPU-s spent outside this benchmark during its {wall:.0f} s "
            f"({share:.0f}% of {cpus} CPUs: other work, and kernel threads such as writeback); "
            f"the benchmark itself used {ours:.0f} CPU-s"
        )


def _loadavg() -> str:
    """1, 5 and 15 minute load averages: other work on the machine skews the figures."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def versions(core: ModuleType | None, core_error: str | None) -> dict[str, str]:
    if core is not None:
        try:
            from importlib.metadata import version

            pkg = version("pyrun")
        except Exception:
            pkg = "unknown"
        pyrun_v = f"pyrun {pkg}, _core {getattr(core, '__version__', 'unknown')}"
    else:
        pyrun_v = f"not available: {core_error}"
    return {
        "pyrun": pyrun_v,
        "python": f"{sys.version.split()[0]} ({sys.executable}); hashlib on {ssl.OPENSSL_VERSION}",
        "GNU tar": tool_version(["tar", "--version"]),
        "gzip": tool_version(["gzip", "--version"]),
        "zstd": tool_version(["zstd", "--version"]),
        "umoci": tool_version(["umoci", "--version"]),
        "openssl": tool_version(["openssl", "version"]),
        "podman": tool_version(["podman", "--version"]),
        "runc": tool_version(["runc", "--version"]),
        "crun": tool_version(["crun", "--version"]),
        "skopeo": tool_version(["skopeo", "--version"]),
        "buildah": tool_version(["buildah", "--version"]),
        "docker-registry": tool_version(["docker-registry", "--version"]),
        "qemu": tool_version(["qemu-system-x86_64", "--version"]),
        "docker": tool_version(
            [
                "docker",
                "version",
                "--format",
                "client {{.Client.Version}}, server {{.Server.Version}}",
            ]
        ),
    }


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def table(rows: list[Row]) -> str:
    head = "| capability | case | tool | timing | median s | min s | max s | peer/pyrun | notes |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        tool = f"{r.tool} (info)" if r.role == "info" else r.tool
        if r.reason is not None:
            cells = [f"not available: {r.reason}", "", "", ""]
        else:
            ratio = "baseline" if r.role == "pyrun" else _fmt_ratio(r.ratio)
            cells = [_fmt(r.median), _fmt(r.min), _fmt(r.max), ratio]
        note = r.note.replace("|", "/")
        row = [r.capability, r.case, tool, r.timing, *[c.replace("|", "/") for c in cells], note]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


SCALE_MONITORS: Final = {
    "pyrun run -d": "pyrun-runtime monitor",
    "podman run -d": "conmon",
    "docker run -d": "containerd-shim-runc-v2",
}


def summary(rows: list[Row]) -> str:
    """The results in the README's shape: one line per peer, next to pyrun's figure in the same
    case (info rows left out; a peer that did not run says why), and after the scale rows the
    memory per container."""

    def why(r: Row) -> str:
        reason = r.reason or ""
        return reason if len(reason) <= 90 else reason[:87] + "..."

    memory: list[str] = []
    pss = {r.tool: r.metrics["monitor_pss_mb"] for r in rows if "monitor_pss_mb" in r.metrics}
    mine_pss = pss.get("pyrun run -d")
    for tool, mb in pss.items():
        if mine_pss and tool != "pyrun run -d":
            memory.append(
                f"| scale | memory per container (PSS of its monitor) | "
                f"`{SCALE_MONITORS['pyrun run -d']}` {mine_pss:.2f} MB | "
                f"`{SCALE_MONITORS.get(tool, tool)}` {mb:.2f} MB | {_fmt_ratio(mb / mine_pss)} |"
            )
    cases: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        cases.setdefault((r.capability, r.case), []).append(r)
    lines = ["| capability | case | pyrun | peer | peer/pyrun |", "|---|---|---|---|---|"]
    for (cap, case), group in cases.items():
        if cap != "scale" and memory and any(ln.startswith("| scale |") for ln in lines):
            lines += memory
            memory = []
        base = next((r for r in group if r.role == "pyrun"), None)
        if base is None:
            continue
        mine = f"`{base.tool}` {base.median:.3f} s" if base.median is not None else "not available"
        for r in group:
            if r.role != "peer":
                continue
            if r.reason is not None:
                peer, ratio = f"`{r.tool}`: not available ({why(r)})", "-"
            else:
                peer, ratio = f"`{r.tool}` {r.median:.3f} s", _fmt_ratio(r.ratio)
            lines.append(f"| {cap} | {case} | {mine} | {peer} | {ratio} |")
    return "\n".join(lines + memory)


def _fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


RUN_KEYS: Final = ("date", "command", "quick", "rounds", "warmups", "duration_s")


def merge_previous(
    out: Path,
    measured: Sequence[str],
    quick: bool,
    rows: list[Row],
    runs: dict[str, dict[str, Any]],
    inputs: dict[str, str],
) -> str | None:
    """Add to `rows`, `runs` and `inputs` what out/results.json holds for the capabilities not
    measured now (same mode only); rows end up in CAPABILITIES order. Returns a line saying what
    was kept or why nothing was, or None when there is no earlier report."""
    path = out / "results.json"
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return f"not merged with {path}: unreadable ({e})"
    if bool(old.get("quick")) != quick:
        return f"not merged with {path}: it is from a {'quick' if old.get('quick') else 'full'} run"
    old_runs = old.get("runs_by_capability") or {}
    kept: list[str] = []
    for cap in CAPABILITIES:
        cap_rows = [r for r in old.get("rows", []) if r.get("capability") == cap]
        if cap in measured or not cap_rows:
            continue
        run = old_runs.get(cap) or {
            **{k: old.get(k) for k in RUN_KEYS},
            "machine": old.get("machine", {}),
        }
        if isinstance(run.get("rounds"), dict):  # a run's rounds for all of its capabilities
            run = {**run, "rounds": run["rounds"].get(cap)}
        rows.extend(Row.from_json(r) for r in cap_rows)
        runs[cap] = run
        kept.append(cap)
    for k, v in old.get("inputs", {}).items():
        if k.split()[0] in kept:
            inputs.setdefault(k, v)
    rows.sort(key=lambda r: CAPABILITIES.index(r.capability))
    return f"rows of {', '.join(kept)} kept from {path}" if kept else None


def _runs_lines(runs: dict[str, dict[str, Any]]) -> list[str]:
    """One line per run (capabilities measured by the same command share it)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for cap in CAPABILITIES:
        if cap in runs:
            groups.setdefault((str(runs[cap]["date"]), str(runs[cap]["command"])), []).append(cap)
    lines = []
    for (date, command), caps in groups.items():
        run = runs[caps[0]]
        m = run.get("machine", {})
        rounds = ", ".join(f"{c} {runs[c].get('rounds')}" for c in caps)
        lines.append(
            f"- {', '.join(caps)}: {date}, `{command}`"
            f"{' (quick mode, tiny inputs)' if run.get('quick') else ''}; timed rounds: {rounds}, "
            f"after {run.get('warmups')} warm-up round(s); {run.get('duration_s')} s; load average "
            f"{m.get('load average at start', '?')} at start, {m.get('load average at end', '?')} "
            f"at end; {m.get('contention', 'contention unknown')}"
        )
    return lines


def write_report(
    out: Path,
    rows: list[Row],
    machine: dict[str, str],
    vers: dict[str, str],
    meta: dict[str, Any],
    inputs: dict[str, str],
    runs: dict[str, dict[str, Any]],
    merge_note: str | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    older = sorted({str(r.get("date")) for r in runs.values()} - {meta["date"]})
    md = [
        "# pyrun vs peers",
        "",
        f"Date: {meta['date']}. Command: `{meta['command']}`. "
        f"{'Quick mode (tiny inputs). ' if meta['quick'] else ''}"
        + (
            f"Rows of other capabilities come from earlier runs ({', '.join(older)}): see Runs."
            if older
            else ""
        ),
        "",
        "peer/pyrun is the peer's median over pyrun's median in the same case: above 1 means pyrun "
        "is faster. Contenders of a case ran interleaved (order rotated each round) on a warm page "
        "cache; work directories were created and removed outside the timing, and every run was "
        "followed by `sync`, also outside the timing. The work directories, pyrun's stores and, on "
        "a loop filesystem, podman's store lie on the scratch filesystem named below. "
        "*in-process*: a call timed inside the benchmark's Python process; *CLI*: perf_counter "
        "around subprocess.run, process start included. *(info)* rows are for reference only.",
        "",
        "## Runs",
        "",
        *_runs_lines(runs),
        "",
        "## Machine" + (" (latest run; earlier runs' are in results.json)" if older else ""),
        "",
        *[f"- {k}: {v}" for k, v in machine.items()],
        "",
        "## Versions" + (" (at the latest run)" if older else ""),
        "",
        *[f"- {k}: {v}" for k, v in vers.items()],
        "",
        "## Inputs",
        "",
        *[f"- {k}: {v}" for k, v in inputs.items()],
        "",
        "## Summary",
        "",
        "One line per peer: its median next to pyrun's in the same case (*info* rows are left "
        "out); above 1x pyrun is faster. The full table is below.",
        "",
        summary(rows),
        "",
        "## Results",
        "",
        table(rows),
        "",
    ]
    doc = {
        **meta,
        "machine": machine,
        "versions": vers,
        "inputs": inputs,
        "merged": merge_note,
        "runs_by_capability": runs,
        "rows": [r.to_json() for r in rows],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    md += ["## Plots", "", *plot_lines(doc, out), ""]
    (out / "RESULTS.md").write_text("\n".join(md))


def plot_lines(doc: dict[str, Any], out: Path) -> list[str]:
    """Make the plots (benches/plots.py) and return RESULTS.md's lines for them: an image link
    each, or why there is none."""
    import plots  # benches/plots.py; matplotlib is imported only in there, and only now

    try:
        made = plots.make_plots(doc, out)
    except plots.PlotsUnavailable as e:
        print(str(e), file=sys.stderr)
        return [f"{e}."]
    for p in made:
        print(f"wrote {p}", file=sys.stderr)
    return [f"![{p.stem}]({p.name})" for p in made] or ["No rows to plot."]


# --------------------------------------------------------------------------------------------
# main


def _parse_only(value: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in chosen if v not in CAPABILITIES]
    if bad or not chosen:
        choices = ", ".join(CAPABILITIES)
        raise argparse.ArgumentTypeError(
            f"unknown capability {', '.join(bad) or '(none)'}: choose from {choices}"
        )
    return chosen


def _mount_loop(base: Path, size: int) -> tuple[Path, str]:
    """Make an ext4 filesystem with a journal in a sparse file under `base`, attach it to a loop
    device (direct I/O where the backing filesystem allows) and mount it. Returns the mount
    point and the loop device."""
    if os.geteuid() != 0:
        raise Unavailable("mounting a loop filesystem needs root")
    mkfs, losetup, mount = tool_path("mkfs.ext4"), tool_path("losetup"), tool_path("mount")
    tool_path("umount")
    img, mnt = base / "fs.img", base / "mnt"
    with open(img, "wb") as f:
        f.truncate(size)
    # Inode tables and journal written now: no lazy-init thread working during the timing.
    run_cmd([mkfs, "-q", "-F", "-j", "-E", "lazy_itable_init=0,lazy_journal_init=0", img])
    try:
        dev = run_cmd([losetup, "--find", "--show", "--direct-io=on", img]).stdout.decode()
    except CommandFailed:
        dev = run_cmd([losetup, "--find", "--show", img]).stdout.decode()
    dev = dev.strip()
    mnt.mkdir()
    try:
        run_cmd([mount, "-t", "ext4", dev, mnt])
    except CommandFailed:
        run_cmd([losetup, "-d", dev])
        raise
    return mnt, dev


def _unmount_loop(mnt: Path, dev: str) -> None:
    for attempt in range(5):
        proc = subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
        if proc.returncode == 0:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        subprocess.run(["umount", "--lazy", str(mnt)], capture_output=True, check=False)
    subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


@contextlib.contextmanager
def scratch(parent: str | None, mode: str, size: int) -> Iterator[tuple[Path, str, bool]]:
    """The scratch space for inputs and per-run directories, a line that describes it, and
    whether it is a loop filesystem made for this run.

    mode "loop" (or "auto" when possible): a journaled ext4 on a loop device made for this run,
    so that the figures do not depend on the host's filesystem or on what other processes delete
    on it. (ext4 without a journal, as some VM images use, skips inodes deleted in the last
    minutes when it allocates new ones; after a big deletion, extracting a rootfs can take ten
    times as long, whichever tool does it.) mode "dir": a directory under `parent`."""
    base = Path(tempfile.mkdtemp(prefix="pyrun-compare-", dir=parent))
    mounted: tuple[Path, str] | None = None
    signal.signal(signal.SIGTERM, _terminate)
    try:
        why = "--scratch dir"
        if mode in ("auto", "loop"):
            try:
                mounted = _mount_loop(base, size)
            except (Unavailable, CommandFailed, OSError) as e:
                if mode == "loop":
                    raise
                why = f"no loop filesystem: {e}"
        if mounted is not None:
            mnt, dev = mounted
            yield mnt, f"ext4 with a journal, {human_bytes(size)}, on {dev}, mounted at {mnt}", True
        else:
            yield base, f"{base}: {_mount_line(base)} ({why})", False
    finally:
        if mounted is not None:
            _unmount_loop(*mounted)
        remove_tree(base)


# Signals that came while _signals_deferred() was active (None: not active).
_deferred: list[int] | None = None


def _terminate(signum: int, _frame: object) -> None:
    if _deferred is not None:
        _deferred.append(signum)
        return
    raise SystemExit(128 + signum)  # run the clean-up (unmount) on SIGTERM too


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends, then act on them: a container start that
    is cut short (its client killed between create and start) leaves a container whose id
    nobody knows, which then holds the scratch filesystem."""
    global _deferred
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_term = signal.signal(signal.SIGTERM, _terminate)
    old_int = signal.signal(signal.SIGINT, _terminate)
    _deferred = []
    try:
        yield
    finally:
        pending, _deferred = _deferred, None
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if pending:
            if pending[0] == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + pending[0])


def _short_tmp() -> str:
    """/run where we may write (a tmpfs, as a runroot expects), else /tmp."""
    return "/run" if os.access("/run", os.W_OK) else "/tmp"


def _mount_line(path: Path) -> str:
    """Source, type and options of the filesystem holding `path`, from findmnt."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if len(out) == 3:
            return f"{out[1]} on {out[0]} ({out[2]}), statfs type {_fs_type(path)}"
    return f"statfs type {_fs_type(path)}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="tiny inputs, 2-3 rounds (< 90 s)")
    ap.add_argument(
        "--only",
        type=_parse_only,
        default=list(CAPABILITIES),
        help=",".join(CAPABILITIES) + " (default: all)",
    )
    ap.add_argument(
        "--out", type=Path, default=REPO / "benches" / "results", help="report directory"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        help="timed rounds for every capability (default 5, start 20, bridge 10, scale 1, pull, "
        "push and build 3; with --quick 2, start 3, vm 1)",
    )
    ap.add_argument("--warmups", type=int, default=1, help="untimed warm-up rounds (default 1)")
    ap.add_argument(
        "--vm-accel",
        choices=["auto", "kvm", "tcg"],
        default="auto",
        help="qemu's accelerator for the vm capability; auto (default): KVM when a KVM guest "
        "really boots here (probed, up to 10 s), else TCG",
    )
    ap.add_argument("--tmpdir", help="scratch directory parent (default: $TMPDIR or /tmp)")
    ap.add_argument(
        "--scratch",
        choices=["auto", "loop", "dir"],
        default="auto",
        help="loop: a journaled ext4 loop filesystem made for the run (needs root); dir: a plain "
        "directory under --tmpdir; auto (default): loop when possible, else dir",
    )
    ap.add_argument(
        "--no-merge",
        action="store_true",
        help="write only this run's rows (default: keep the other capabilities' rows of DIR)",
    )
    args = ap.parse_args(argv)
    if (args.rounds is not None and args.rounds < 1) or args.warmups < 0:
        ap.error("--rounds must be >= 1 and --warmups >= 0")
    rounds = {
        cap: args.rounds or DEFAULT_ROUNDS[cap][1 if args.quick else 0]
        for cap in CAPABILITIES
        if cap in args.only
    }

    core, core_error = _load_pyrun()
    builders: dict[str, Callable[[Context], list[Case]]] = {
        "extract": extract_cases,
        "sha256": sha256_cases,
        "import": import_cases,
        "start": start_cases,
        "oci": oci_cases,
        "bridge": bridge_cases,
        "vm": vm_cases,
        "pull": pull_cases,
        "push": push_cases,
        "build": build_cases,
    }
    started = dt.datetime.now(dt.UTC)
    meter = CpuMeter()
    rows: list[Row] = []
    size = (1 if args.quick else 8) << 30
    with scratch(args.tmpdir, args.scratch, size) as (work, scratch_note, is_loop):
        ctx = Context(args.quick, work, core, core_error)
        ctx.vm_accel = args.vm_accel
        if is_loop:  # podman's store on the same filesystem as pyrun's
            # Its runroot (state, sockets) on a short path: conmon's attach socket lies under
            # runroot/overlay-containers/<64 hex>/userdata/, and a Unix socket's path has at most
            # 107 bytes, which a scratch fs under a deep --tmpdir would exceed.
            runroot = tempfile.mkdtemp(prefix="pyrun-bench-", dir=_short_tmp())
            ctx.podman_store = ["--root", f"{work}/podman", "--runroot", runroot]
            ctx.cleanups.append(lambda: remove_tree(Path(runroot)))
        machine = machine_info(scratch_note)
        try:
            for cap in CAPABILITIES:
                if cap not in args.only:
                    continue
                if cap == "scale":  # its own loop: a round holds 100 containers per tool
                    rows.extend(run_scale(ctx, rounds[cap], args.warmups))
                    continue
                for case in builders[cap](ctx):
                    rows.extend(run_case(case, work / "runs", rounds[cap], args.warmups))
                for p in work.glob("blob*"):
                    p.unlink()  # the blobs take 2 GB: free them once hashed
        finally:
            for cleanup in reversed(ctx.cleanups):
                try:
                    cleanup()
                except Exception as e:
                    print(f"clean-up failed: {e!r}", file=sys.stderr)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(
            ["benches/compare.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "quick": args.quick,
        "rounds": rounds,
        "warmups": args.warmups,
        "duration_s": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
    }
    machine["load average at end"] = _loadavg()
    machine["contention"] = meter.report()
    runs = {cap: {**meta, "rounds": n, "machine": machine} for cap, n in rounds.items()}
    merge_note = None
    if not args.no_merge:
        merge_note = merge_previous(args.out, list(rounds), args.quick, rows, runs, ctx.inputs)
        if merge_note:
            print(merge_note, file=sys.stderr)
    write_report(
        args.out, rows, machine, versions(core, core_error), meta, ctx.inputs, runs, merge_note
    )
    print(table(rows))
    print()
    print(summary(rows))
    print(f"\nwrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
