"""OCI bundles for the runtime CLI tests: a busybox rootfs (unpacked once per session and
copied per bundle as hard links) and a config.json like `runc spec` writes, and a runner for
a runc-compatible binary (pyrun-runtime or runc) with its own --root."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrun.runtime.containers import runtime_binary

CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

BASE_CONFIG: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
        "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "oci",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ],
    "linux": {
        "namespaces": [
            {"type": "pid"},
            {"type": "network"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
        "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
    },
}


def unpack_rootfs(tar: Path, dest: Path) -> Path:
    """The busybox rootfs unpacked at `dest` (once)."""
    if not (dest / "bin" / "busybox").exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="tar")
    return dest


def make_bundle(
    master: Path, bundle: Path, args: list[str], config: dict[str, Any] | None = None
) -> Path:
    """A bundle at `bundle` whose rootfs is a hard-linked copy of `master` and whose config is
    BASE_CONFIG with process.args = `args`, updated by `config` (top-level keys replaced,
    `process`/`linux` keys merged one level down)."""
    rootfs = bundle / "rootfs"
    if not rootfs.exists():
        shutil.copytree(master, rootfs, symlinks=True, copy_function=os.link)
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["process"]["args"] = args
    for key, value in (config or {}).items():
        if key in ("process", "linux") and isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


@dataclass
class Runtime:
    """A runc-compatible binary with a state root of its own."""

    name: str
    binary: str
    root: Path

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        if "stdout" not in kw:
            kw["capture_output"] = True
        return subprocess.run(
            [self.binary, "--root", str(self.root), *args],
            text=True,
            input=input,
            timeout=timeout,
            **kw,
        )

    def create(
        self, cid: str, bundle: Path, *flags: str, global_flags: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        """`create`, the container's stdout and stderr (and the runtime's) going to
        bundle/out and bundle/err: a pipe would stay open as long as the container runs."""
        with (bundle / "out").open("w") as out, (bundle / "err").open("w") as err:
            args = (*global_flags, "create", "--bundle", str(bundle), *flags, cid)
            r = self(*args, stdout=out, stderr=err)
        r.stderr = (bundle / "err").read_text()
        return r

    def ok(self, *args: str, **kw: Any) -> str:
        r = self(*args, **kw)
        assert r.returncode == 0, f"{self.name} {' '.join(args)}: {r.stderr}"
        return r.stdout

    def state(self, cid: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.ok("state", cid))
        return out

    def cleanup(self) -> None:
        """Remove every container this runtime's root still has."""
        r = self("list", "-q")
        for cid in r.stdout.split():
            self("delete", "--force", cid)


def pyrun_runtime() -> str:
    return runtime_binary()
