"""cgroup limits on `pyrun run` (-m, --memory-swap, --cpus, --cpu-shares, --cpuset-cpus,
--pids-limit) end to end on this host's cgroup v1 hierarchies (/sys/fs/cgroup/<controller>):
the OOM killer (exit 137, State.OOMKilled), the pids limit, the CFS quota and cpuset seen from
the host, cleanup, and Docker's errors for bad values.

A pure cgroup v2 host (/sys/fs/cgroup is cgroup2) cannot be exercised on this machine, which
mounts v1 controllers and a controller-less cgroup2 at /sys/fs/cgroup/unified: the v2 manager
is covered by the Rust unit tests against temporary directory trees (rust/cgroups/tests.rs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root
from pyrun.store import Store

CG = Path("/sys/fs/cgroup")
V1 = (CG / "memory" / "cgroup.procs").exists() and (CG / "pids" / "cgroup.procs").exists()

pytestmark = [
    needs_root,
    pytest.mark.skipif(not V1, reason="needs cgroup v1 memory/cpu/cpuset/pids hierarchies"),
]


@pytest.fixture
def bb(pyrun: PyrunRunner, busybox_tar: Path) -> PyrunRunner:
    assert pyrun("import", str(busybox_tar), "bb:cg").returncode == 0
    return pyrun


def inspect(pyrun: PyrunRunner, name: str) -> dict:  # type: ignore[type-arg]
    res = pyrun("inspect", name)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)[0]  # type: ignore[no-any-return]


def leftovers(cid: str) -> list[Path]:
    return [p for p in CG.glob(f"*/pyrun/{cid}") if p.exists()]


def test_memory_limit_oom_kill(bb: PyrunRunner) -> None:
    res = bb(
        "run", "--name", "oom", "-m", "16m", "bb:cg",
        "sh", "-c", "head -c 60m /dev/zero > /dev/shm/fill; echo survived",
    )  # fmt: skip
    assert res.returncode == 137, (res.stdout, res.stderr)
    assert "survived" not in res.stdout
    info = inspect(bb, "oom")
    assert info["State"]["OOMKilled"] is True
    assert info["State"]["ExitCode"] == 137
    assert info["Cgroup"] == f"/pyrun/{info['Id']}"
    assert leftovers(info["Id"]) == []


def test_memory_limit_not_hit(bb: PyrunRunner) -> None:
    res = bb("run", "--name", "fine", "-m", "64m", "--memory-swap", "-1", "bb:cg", "echo", "ok")
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr
    info = inspect(bb, "fine")
    assert info["State"]["OOMKilled"] is False
    assert leftovers(info["Id"]) == []


def test_pids_limit(bb: PyrunRunner) -> None:
    res = bb(
        "run", "--rm", "--pids-limit", "10", "bb:cg",
        "sh", "-c", "for i in $(seq 30); do sleep 2 & done; wait; echo end",
    )  # fmt: skip
    assert "can't fork" in res.stderr, (res.returncode, res.stderr)


def _run_in_background(store_root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pyrun.cli", "--root", str(store_root), "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _container_cgroup(store_root: Path, controller: str) -> tuple[str, Path]:
    """(container id, its cgroup dir in `controller`) once the container's pid file exists."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid_file in Store(store_root).run_root.glob("*/pid"):
            pid = int(pid_file.read_text())
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, ctrls, path = line.split(":", 2)
                if controller in ctrls.split(","):
                    return pid_file.parent.name, CG / controller / path.lstrip("/")
        time.sleep(0.05)
    raise AssertionError("the container never started")


def test_cpus_quota_and_cpuset_seen_from_the_host(bb: PyrunRunner, store_root: Path) -> None:
    proc = _run_in_background(
        store_root, "--rm", "--cpus", "0.5", "--cpuset-cpus", "0", "--cpu-shares", "512",
        "bb:cg", "sh", "-c", "grep Cpus_allowed_list /proc/self/status; sleep 2",
    )  # fmt: skip
    try:
        cid, cpu_dir = _container_cgroup(store_root, "cpu")
        assert cpu_dir == CG / "cpu" / "pyrun" / cid
        assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu_dir / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (cpu_dir / "cpu.shares").read_text().strip() == "512"
        cpuset = CG / "cpuset" / "pyrun" / cid / "cpuset.cpus"
        assert cpuset.read_text().strip() == "0"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.split() == ["Cpus_allowed_list:", "0"]
    assert leftovers(cid) == []


def test_client_accepts_docker_py_names(client, busybox_tar: Path) -> None:  # type: ignore[no-untyped-def]
    client.images.import_image(busybox_tar, "bb:py")
    out = client.containers.run(
        "bb:py",
        ["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null; echo ok"],
        remove=True,
        mem_limit="32m",
        memswap_limit="64m" if (CG / "memory" / "memory.memsw.limit_in_bytes").exists() else None,
        pids_limit=20,
        cpus=1.0,
        cpu_shares=256,
        cpuset_cpus="0",
    )
    assert out.endswith(b"ok\n")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-m", "1k"], "Minimum memory limit allowed is 6MB"),
        (["-m", "lots"], "invalid argument 'lots' for \"--memory\" flag"),
        (
            ["--memory-swap", "1m", "-m", "16m"],
            "Minimum memoryswap limit should be larger than memory limit, see usage.",
        ),
        (["--memory-swap", "32m"], "You should always set the Memory limit"),
        (["--cpus", "abc"], "failed to parse 'abc' as a rational number"),
        (["--cpus", "999"], "range of CPUs is from 0.01 to"),
        (["--cpuset-cpus", "x"], "Invalid value x for cpuset cpus"),
    ],
)
def test_bad_values(bb: PyrunRunner, flags: list[str], message: str) -> None:
    res = bb("run", "--rm", *flags, "bb:cg", "true")
    assert res.returncode == 125, res.stderr
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_setup_failure_is_a_start_error(bb: PyrunRunner) -> None:
    # cpuset.cpus naming a CPU this host lacks: the kernel refuses the write (ERANGE/EINVAL).
    cpu = (os.cpu_count() or 1) + 7
    res = bb("run", "--rm", "--cpuset-cpus", str(cpu), "bb:cg", "true")
    assert res.returncode == 125
    assert f"cgroup: write cpuset.cpus={cpu}: " in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_container_sees_its_own_cgroup(bb: PyrunRunner) -> None:
    """/sys/fs/cgroup in the container: each v1 hierarchy (read-only) rooted at the
    container's own cgroup, through a cgroup namespace made after the move into it."""
    res = bb(
        "run", "--rm", "-m", "32m", "bb:cg", "sh", "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; grep -c ':/$' /proc/self/cgroup; "
        "wc -l < /proc/self/cgroup; mkdir /sys/fs/cgroup/memory/x 2>&1; ls /sys/fs/cgroup",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == str(32 * 1024 * 1024)
    assert lines[1] == lines[2].strip()  # every hierarchy's path is "/"
    assert "Read-only file system" in lines[3]
    assert {"memory", "pids", "cpuset"} <= set(lines[4:])
    res = bb(
        "run", "--rm", "--privileged", "bb:cg", "grep", " /sys/fs/cgroup/pids ", "/proc/mounts"
    )
    assert res.returncode == 0 and " rw," in res.stdout, res.stdout + res.stderr


@pytest.mark.skipif(
    not (CG / "memory" / "memory.memsw.limit_in_bytes").exists(),
    reason="needs swap accounting (memory.memsw.*)",
)
def test_default_swap_is_twice_the_memory(bb: PyrunRunner) -> None:
    def memsw(*flags: str) -> str:
        res = bb(
            "run",
            "--rm",
            *flags,
            "bb:cg",
            "cat",
            "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
        )
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    assert memsw("-m", "32m") == str(64 * 1024 * 1024)  # Docker: swap = memory when unset
    assert memsw("-m", "32m", "--memory-swap", "48m") == str(48 * 1024 * 1024)
    assert int(memsw("-m", "32m", "--memory-swap", "-1")) > 2**62
