"""The VM baseline of the comparison: what a container start replaces. A Debian cloud kernel
boots under qemu with a busybox initramfs whose /init powers the machine off at once; the figure
is the wall time from starting qemu to its exit.

    .venv/bin/python benches/vm.py [--accel auto|kvm|tcg] [--boots N]

The kernel comes from Debian's `linux-image-cloud-amd64` (the package it depends on, fetched with
`apt-get download` and unpacked with `dpkg-deb -x`), the busybox from the busybox test image (the
same static binary the containers run). Both are cached under $PYRUN_TEST_CACHE/vm (default
/var/cache/pyrun-test/vm), so later runs need no network. KVM is used when a KVM guest actually
boots here (tried, not assumed: /dev/kvm may exist where nested virtualisation does not work and
the guest spins forever), else TCG, qemu's emulator; which one a figure used is always reported.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
QEMU: Final = "qemu-system-x86_64"
KERNEL_META_PKG: Final = "linux-image-cloud-amd64"
INSTALL_HINT: Final = "ci/install-deps.sh installs qemu-system-x86"
# /init of the initramfs: power off at once (-f: no init system to ask).
INIT: Final = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
# The kernel's last line before qemu exits; its timestamp is the guest's own boot-to-poweroff time.
POWER_DOWN: Final = re.compile(rb"\[\s*(\d+\.\d+)\]\s+reboot: Power down")
BOOT_TIMEOUT: Final = 120.0  # seconds for one boot (TCG on a loaded machine takes ~3-6 s)
KVM_PROBE_TIMEOUT: Final = 10.0  # a working KVM guest powers off in about a second


class VmUnavailable(Exception):
    """The VM baseline cannot run here; the message says why (one line)."""


@dataclass(frozen=True)
class VmAssets:
    kernel: Path
    initrd: Path
    kernel_package: str  # "linux-image-6.1.0-57-cloud-amd64 6.1.192-3"


@dataclass(frozen=True)
class Boot:
    seconds: float  # wall time of the qemu process
    guest_seconds: float | None  # the guest kernel's timestamp of "reboot: Power down"


def cache_dir() -> Path:
    return Path(os.environ.get("PYRUN_TEST_CACHE") or "/var/cache/pyrun-test") / "vm"


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, timeout=timeout, check=False, text=True
        )
    except FileNotFoundError:
        raise VmUnavailable(f"{argv[0]} not found in PATH") from None
    except subprocess.TimeoutExpired:
        raise VmUnavailable(f"`{' '.join(argv)}` timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise VmUnavailable(f"`{' '.join(argv)}` exited {proc.returncode}: {last[0]}")
    return proc.stdout


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def kernel(cache: Path) -> tuple[Path, str]:
    """The cloud kernel's vmlinuz and its package's name and version, downloaded once."""
    record = cache / "kernel.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = json.loads(record.read_text())
        path = cache / known["file"]
        if path.is_file():
            return path, known["package"]
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise VmUnavailable("no kernel cached and no apt-get/dpkg-deb to fetch Debian's")
    # The meta package depends on the current image package: linux-image-<abi>-cloud-amd64.
    deps = _run(["apt-cache", "depends", KERNEL_META_PKG])
    match = re.search(r"Depends: (linux-image-\S+-cloud-amd64)\b", deps)
    if match is None:
        raise VmUnavailable(f"apt-cache knows no {KERNEL_META_PKG} (run apt-get update?)")
    pkg = match.group(1)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        tmpdir = Path(tmp)
        # As root, apt drops to the _apt user, who cannot write here: download as root.
        sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
        _run(["apt-get", "download", "-q", *sandbox, pkg], cwd=tmpdir)
        debs = sorted(tmpdir.glob("*.deb"))
        if not debs:
            raise VmUnavailable(f"apt-get download {pkg} left no .deb")
        version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"]).strip()
        _run(["dpkg-deb", "-x", str(debs[0]), str(tmpdir / "x")])
        images = sorted((tmpdir / "x" / "boot").glob("vmlinuz-*"))
        if not images:
            raise VmUnavailable(f"{debs[0].name} holds no boot/vmlinuz-*")
        target = cache / images[0].name
        _write_atomic(target, images[0].read_bytes())
    package = f"{pkg} {version}"
    _write_atomic(record, json.dumps({"file": target.name, "package": package}).encode())
    return target, package


def _cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio archive in the kernel's initramfs format (newc): (name, mode, data, rdev)."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, (rmaj, rmin)) in enumerate(
        [*entries, ("TRAILER!!!", 0, b"", (0, 0))], start=1
    ):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(encoded), 0)
        out += b"070701" + "".join(f"{v:08x}" for v in fields).encode() + encoded
        pad()
        out += data
        pad()
    return bytes(out)


def _busybox(busybox_tar: Path) -> bytes:
    """bin/busybox of the busybox test image: the static binary the containers run."""
    try:
        with tarfile.open(busybox_tar) as tf:
            for name in ("./bin/busybox", "bin/busybox"):
                with contextlib.suppress(KeyError):
                    f = tf.extractfile(name)
                    if f is not None:
                        return f.read()
    except (OSError, tarfile.TarError) as e:
        raise VmUnavailable(f"cannot read {busybox_tar}: {e}") from None
    raise VmUnavailable(f"{busybox_tar} has no bin/busybox")


def initramfs(cache: Path, busybox_tar: Path) -> Path:
    """A gzip'd initramfs of /bin/busybox, /dev/console and /init (poweroff -f), cached under a
    name keyed by its content."""
    bb = _busybox(busybox_tar)
    archive = _cpio_newc(
        [
            ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
            ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
            ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
            ("bin/busybox", stat.S_IFREG | 0o755, bb, (0, 0)),
            ("init", stat.S_IFREG | 0o755, INIT, (0, 0)),
        ]
    )
    path = cache / f"initrd-busybox-{hashlib.sha256(archive).hexdigest()[:12]}.gz"
    if not path.is_file():
        _write_atomic(path, gzip.compress(archive, compresslevel=6, mtime=0))
    return path


def assets(busybox_tar: Path, cache: Path | None = None) -> VmAssets:
    if shutil.which(QEMU) is None:
        raise VmUnavailable(f"{QEMU} not found in PATH ({INSTALL_HINT})")
    cache = cache or cache_dir()
    kpath, package = kernel(cache)
    return VmAssets(kpath, initramfs(cache, busybox_tar), package)


def qemu_argv(a: VmAssets, accel: str) -> list[str]:
    """One CPU, 256 MiB, no devices but a serial console, no network; -no-reboot makes the
    guest's power-off end qemu. The default CPU model on both accelerators (`-cpu host` fails on
    some KVM hosts)."""
    return [
        QEMU,
        "-accel",
        accel,
        "-M",
        "pc",
        "-smp",
        "1",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(a.kernel),
        "-initrd",
        str(a.initrd),
        "-append",
        "console=ttyS0 panic=-1 quiet",
    ]


def boot(a: VmAssets, accel: str, timeout: float = BOOT_TIMEOUT) -> Boot:
    """Boot once and wait for the guest to power off; raise VmUnavailable when it does not."""
    argv = qemu_argv(a, accel)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise VmUnavailable(
            f"the {accel.upper()} guest did not power off within {timeout:.0f} s"
        ) from None
    elapsed = time.perf_counter() - t0
    match = POWER_DOWN.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        lines = (proc.stderr + proc.stdout).decode(errors="replace").strip().splitlines()
        why = lines[-1].strip() if lines else "no output"
        raise VmUnavailable(f"{QEMU} -accel {accel} exited {proc.returncode}: {why}")
    return Boot(elapsed, float(match.group(1)))


def choose_accel(a: VmAssets, want: str = "auto") -> tuple[str, str]:
    """("kvm" or "tcg", why). auto: KVM when a KVM guest really powers off within
    KVM_PROBE_TIMEOUT (that probe boot is untimed), else TCG."""
    if want in ("kvm", "tcg"):
        return want, f"-accel {want} asked for"
    if want != "auto":
        raise ValueError(f"accelerator must be auto, kvm or tcg, not {want!r}")
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return "tcg", f"no usable /dev/kvm ({e.strerror})"
    os.close(fd)
    try:
        boot(a, "kvm", KVM_PROBE_TIMEOUT)
    except VmUnavailable as e:
        return "tcg", f"/dev/kvm is there but a KVM guest does not boot ({e})"
    return "kvm", "a KVM guest booted (probed)"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO / "tests"))
    import images

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    ap.add_argument("--boots", type=int, default=3, help="timed boots (default 3)")
    args = ap.parse_args(argv)
    try:
        a = assets(images.busybox_tar())
        accel, why = choose_accel(a, args.accel)
        print(f"{a.kernel_package}; accelerator {accel.upper()}: {why}", file=sys.stderr)
        runs = [boot(a, accel) for _ in range(max(args.boots, 1))]
    except (VmUnavailable, images.ImageUnavailable) as e:
        print(f"vm: {e}", file=sys.stderr)
        return 1
    for r in runs:
        guest = f"{r.guest_seconds:.2f} s in the guest" if r.guest_seconds is not None else ""
        print(f"{r.seconds:.3f} s ({accel.upper()}) {guest}")
    print(f"median {statistics.median(r.seconds for r in runs):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
