"""cgroup v2 for real, in a VM. This host runs cgroup v1 with an empty cgroup2 `unified` mount
beside it, where no v2 controller can be enabled, while most users run pure v2. So the v2 path
is tested in a guest: Debian's cloud kernel under qemu (benches/vm.py fetches and caches it; KVM
when a KVM guest boots here, else TCG) boots an initramfs holding `pyrun-runtime`, its libraries,
the busybox rootfs and bundles written here by pyrun's own spec builder. The guest mounts only
cgroup2 at /sys/fs/cgroup (a pure v2 host), runs each bundle under `pyrun-runtime monitor
--foreground` (what a detached `pyrun run` runs) and prints what the container saw, the state
the monitor recorded and the cgroups left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import needs_root
from pyrun.runtime.spec import RunOptions, build_spec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))
import vm  # noqa: E402  (benches/vm.py: the kernel cache, cpio writer, accelerator probe)

pytestmark = [needs_root]

# What each case runs, with which limits (RunOptions fields), in the guest.
SHOW = (
    "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory.swap.max /sys/fs/cgroup/pids.max "
    "/sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight /sys/fs/cgroup/cpuset.cpus; "
    "cat /proc/self/cgroup; awk '$2 == \"/sys/fs/cgroup\" {print $3}' /proc/mounts"
)
CASES: dict[str, dict[str, Any]] = {
    "limits": {
        "command": ["sh", "-c", SHOW],
        "memory": "64m",
        "memory_swap": "96m",
        "pids_limit": 32,
        "cpus": "0.5",
        "cpu_shares": 512,
        "cpuset_cpus": "0",
    },
    # Doubling a shell variable until the 32 MiB limit: the kernel's OOM killer.
    "oom": {
        "command": ["sh", "-c", 'a=xxxxxxxx; while :; do a="$a$a"; done'],
        "memory": "32m",
        "memory_swap": "32m",
    },
    # Eight background sleeps under a limit of four tasks: a fork fails, the shell says so.
    "pids": {
        "command": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 3 & done"],
        "pids_limit": 4,
    },
    "exit": {"command": ["sh", "-c", "exit 7"]},
}

INIT = b"""#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /newroot
$B mount -t tmpfs -o size=256m tmpfs /newroot
for d in bin lib lib64 t init2; do $B cp -a /$d /newroot/; done
exec $B switch_root /newroot /init2
"""
# pivot_root cannot leave the initramfs, hence the switch to a tmpfs above.
INIT2 = b"""#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /tmp
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
$B mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "@@MODE $($B awk 'index($2, "/sys/fs/cgroup") == 1 {print $3}' /proc/mounts | $B xargs)"
echo "+cpu +cpuset +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
for c in /t/cases/*; do
  n=$($B basename $c)
  echo "@@BEGIN $n"
  /bin/pyrun-runtime monitor --config $c/monitor.json --foreground 2>&1
  echo "@@RC $?"
  echo "@@STATE $($B cat $c/state.json)"
  $B cat $c/log.json
  echo "@@END $n"
done
echo "@@LEFT $($B find /sys/fs/cgroup/pyrun -mindepth 1 -type d 2>/dev/null | $B wc -l)"
$B poweroff -f
"""


def _libraries(binary: Path) -> list[tuple[str, Path]]:
    """(path in the guest, file here) for each shared library `binary` loads, loader included."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.match(r"\s*(?:\S+ => )?(/\S+) \(0x", line)
        if m:
            libs.append((m.group(1).lstrip("/"), Path(os.path.realpath(m.group(1)))))
    return libs


def _tree(root: Path, prefix: str) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """cpio entries for a directory tree (directories, files, symlinks), under `prefix`."""
    entries = [(prefix, stat.S_IFDIR | 0o755, b"", (0, 0))]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        for name in sorted(dirnames) + sorted(filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            guest = f"{prefix}/{rel / name}" if str(rel) != "." else f"{prefix}/{name}"
            if stat.S_ISLNK(st.st_mode):
                entries.append((guest, st.st_mode, os.readlink(p).encode(), (0, 0)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((guest, st.st_mode, b"", (0, 0)))
            elif stat.S_ISREG(st.st_mode):
                entries.append((guest, st.st_mode, p.read_bytes(), (0, 0)))
    return entries


def _runtime_binary() -> Path:
    import pyrun

    p = Path(pyrun.__file__).parent / "_bin" / "pyrun-runtime"
    if not p.is_file():
        pytest.skip(f"{p} is missing (ci/setup.sh builds it)")
    return p


def _initramfs(work: Path, busybox_rootfs: Path, busybox_tar: Path) -> Path:
    runtime = _runtime_binary()
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("bin/busybox", stat.S_IFREG | 0o755, vm._busybox(busybox_tar), (0, 0)),
        ("bin/pyrun-runtime", stat.S_IFREG | 0o755, runtime.read_bytes(), (0, 0)),
        ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("init", stat.S_IFREG | 0o755, INIT, (0, 0)),
        ("init2", stat.S_IFREG | 0o755, INIT2, (0, 0)),
        ("t", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("t/cases", stat.S_IFDIR | 0o755, b"", (0, 0)),
    ]
    made_dirs = {"bin", "dev", "t", "t/cases"}
    for guest, here in _libraries(runtime):
        parts = Path(guest).parts
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made_dirs:
                made_dirs.add(d)
                entries.append((d, stat.S_IFDIR | 0o755, b"", (0, 0)))
        entries.append((guest, stat.S_IFREG | 0o755, here.read_bytes(), (0, 0)))
    for name, options in CASES.items():
        cid = f"v2{name}"
        case = f"t/cases/{name}"
        opts = RunOptions(network="none", **options)
        spec = build_spec({}, str(busybox_rootfs), opts, cid)
        spec["root"]["path"] = f"/{case}/rootfs"
        entries.append((case, stat.S_IFDIR | 0o755, b"", (0, 0)))
        entries += _tree(busybox_rootfs, f"{case}/rootfs")
        entries.append((f"{case}/bundle", stat.S_IFDIR | 0o755, b"", (0, 0)))
        entries.append(
            (f"{case}/bundle/config.json", stat.S_IFREG | 0o644, json.dumps(spec).encode(), (0, 0))
        )
        monitor = {"bundle": f"/{case}/bundle", "dir": f"/{case}", "log": f"/{case}/log.json"}
        entries.append(
            (f"{case}/monitor.json", stat.S_IFREG | 0o644, json.dumps(monitor).encode(), (0, 0))
        )
    path = work / "initrd.cpio"
    path.write_bytes(vm._cpio_newc(entries))
    return path


@pytest.fixture(scope="module")
def guest(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path, busybox_tar: Path
) -> dict[str, Any]:
    """Boot once; returns {"mode": the cgroup mounts' types, "left": cgroup dirs left, CASE:
    {"rc", "state", "output"}}."""
    if shutil.which(vm.QEMU) is None:
        pytest.skip(f"{vm.QEMU} is not installed ({vm.INSTALL_HINT})")
    work = tmp_path_factory.mktemp("v2vm")
    try:
        kernel, _package = vm.kernel(vm.cache_dir())
    except vm.VmUnavailable as e:
        pytest.skip(f"no guest kernel: {e}")
    initrd = _initramfs(work, busybox_rootfs, busybox_tar)
    assets = vm.VmAssets(kernel, initrd, _package)
    accel, _why = vm.choose_accel(vm.assets(busybox_tar))
    argv = vm.qemu_argv(assets, accel)
    argv[argv.index("256")] = "768"  # -m: room for the tmpfs root and a 64 MiB limit
    argv[-1] = "console=ttyS0 panic=-1 loglevel=1"
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    out = proc.stdout.decode(errors="replace").replace("\r", "")
    assert "@@LEFT" in out, (
        f"the guest did not finish (qemu exit {proc.returncode}):\n{out[-3000:]}"
    )
    result: dict[str, Any] = {
        "mode": re.search(r"@@MODE (.*)", out).group(1).split(),  # type: ignore[union-attr]
        "left": int(re.search(r"@@LEFT (\d+)", out).group(1)),  # type: ignore[union-attr]
    }
    for m in re.finditer(r"@@BEGIN (\w+)\n(.*?)@@RC (\d+)\n@@STATE (.*?)\n(.*?)@@END", out, re.S):
        name, monitor_out, rc, state, log = m.groups()
        lines = [json.loads(x)["log"] for x in log.splitlines() if x.startswith("{")]
        result[name] = {
            "rc": int(rc),
            "state": json.loads(state),
            "output": "".join(lines),
            "monitor": monitor_out,
        }
    missing = set(CASES) - set(result)
    assert not missing, f"cases without a result: {missing}\n{out[-3000:]}"
    return result


def test_guest_is_pure_cgroup_v2(guest: dict[str, Any]) -> None:
    assert guest["mode"] == ["cgroup2"]  # one hierarchy, no v1 beside it


def test_limits_reach_the_v2_files(guest: dict[str, Any]) -> None:
    case = guest["limits"]
    assert case["state"]["exit_code"] == 0, case
    # Started inside its cgroup by clone3's CLONE_INTO_CGROUP, not moved in afterwards.
    assert case["state"]["cgroup_clone"] is True
    lines = case["output"].split("\n")
    assert lines[0] == str(64 * 1024 * 1024)  # memory.max
    assert lines[1] == str(32 * 1024 * 1024)  # memory.swap.max: swap beyond memory
    assert lines[2] == "32"  # pids.max
    assert lines[3] == "50000 100000"  # cpu.max from --cpus 0.5
    # cpu.weight from --cpu-shares 512: runc 1.3's conversion (1024 -> 100, 512 -> 59).
    assert lines[4] == "59"
    assert lines[5] == "0"  # cpuset.cpus
    assert lines[6] == "0::/"  # its own cgroup namespace
    assert lines[7] == "cgroup2"


def test_oom_kill_is_reported(guest: dict[str, Any]) -> None:
    state = guest["oom"]["state"]
    assert state["exit_code"] == 137, guest["oom"]
    assert state["oom_killed"] is True


def test_pids_limit_stops_forks(guest: dict[str, Any]) -> None:
    case = guest["pids"]
    assert re.search(r"can't fork|Resource temporarily unavailable", case["output"]), case


def test_exit_code_and_no_cgroup_left(guest: dict[str, Any]) -> None:
    assert guest["exit"]["state"]["exit_code"] == 7
    assert guest["left"] == 0, "container cgroups left under /sys/fs/cgroup/pyrun"
