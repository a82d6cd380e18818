"""runtime-spec conformance: each test checks one requirement of the OCI runtime spec
(lifecycle and state transitions, kill and delete, process, mounts, namespaces,
capabilities, rlimits, devices, masked and read-only paths, hooks and their failure rules,
sysctl, seccomp, cgroups) on the same bundles against pyrun-runtime and, as a control,
against runc: a check that runc fails is a wrong check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import needs_root
from ocibundle import BASE_CONFIG, Runtime, make_bundle, pyrun_runtime, unpack_rootfs

pytestmark = needs_root

RUNTIMES = ["pyrun-runtime", "runc"]


@pytest.fixture(scope="module")
def master_rootfs(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_rootfs(busybox_tar, tmp_path_factory.mktemp("rootfs") / "rootfs")


@pytest.fixture(params=RUNTIMES)
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    name = request.param
    binary = pyrun_runtime() if name == "pyrun-runtime" else shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (ci/install-deps.sh installs it)")
    r = Runtime(name, binary, tmp_path / "state")
    yield r
    r.cleanup()


class Case:
    """One container of one check: its bundle, ID and runtime."""

    def __init__(self, rt: Runtime, master: Path, tmp: Path, request: pytest.FixtureRequest):
        self.rt = rt
        self.master = master
        self.tmp = tmp
        # IDs unique per test and runtime: cgroups are machine-wide.
        self.id = f"conf-{request.node.name.split('[')[0][5:30]}-{rt.name[:4]}-{os.getpid()}"
        self.id = self.id.replace("_", "-")

    def bundle(self, args: list[str], config: dict[str, Any] | None = None) -> Path:
        return make_bundle(self.master, self.tmp / "bundle", args, config)

    def run(
        self, args: list[str], config: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`run` in the foreground: the container's exit status and output."""
        b = self.bundle(args, config)
        return self.rt("run", "--bundle", str(b), self.id)

    def out(self, args: list[str], config: dict[str, Any] | None = None) -> str:
        r = self.run(args, config)
        assert r.returncode == 0, f"{self.rt.name}: {r.stderr}"
        return r.stdout

    def create(self, args: list[str], config: dict[str, Any] | None = None) -> Path:
        b = self.bundle(args, config)
        r = self.rt.create(self.id, b)
        assert r.returncode == 0, f"{self.rt.name}: {r.stderr}"
        return b

    def status(self) -> str:
        return str(self.rt.state(self.id)["status"])

    def wait_status(self, want: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.status() != want:
            assert time.monotonic() < deadline, f"{self.rt.name}: not {want}"
            time.sleep(0.02)


@pytest.fixture
def case(rt: Runtime, master_rootfs: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Case:
    return Case(rt, master_rootfs, tmp_path, request)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# --- lifecycle ------------------------------------------------------------------------------


def test_create_does_not_run_the_program_and_start_does(case: Case) -> None:
    b = case.create(sh("echo ran > /tmp/ran; exec sleep 1000"), {"root": {"path": "rootfs"}})
    st = case.rt.state(case.id)
    assert st["status"] == "created" and st["pid"] > 0 and st["id"] == case.id
    assert st["bundle"] == str(b)
    assert not (b / "rootfs" / "tmp" / "ran").exists()
    case.rt.ok("start", case.id)
    deadline = time.monotonic() + 5
    while not (b / "rootfs" / "tmp" / "ran").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert case.status() == "running"
    (b / "rootfs" / "tmp" / "ran").unlink()


def test_state_is_stopped_after_the_process_exits(case: Case) -> None:
    case.create(["true"])
    case.rt.ok("start", case.id)
    case.wait_status("stopped")


def test_start_of_a_stopped_container_fails(case: Case) -> None:
    case.create(["true"])
    case.rt.ok("start", case.id)
    case.wait_status("stopped")
    assert case.rt("start", case.id).returncode != 0


def test_start_twice_fails(case: Case) -> None:
    case.create(["sleep", "1000"])
    case.rt.ok("start", case.id)
    assert case.rt("start", case.id).returncode != 0
    assert case.status() == "running"


def test_create_with_an_existing_id_fails(case: Case) -> None:
    b = case.create(["sleep", "1000"])
    assert case.rt.create(case.id, b).returncode != 0
    assert case.status() == "created"


def test_state_of_an_unknown_container_fails(case: Case) -> None:
    assert case.rt("state", "conformance-no-such-container").returncode != 0


def test_pid_file_holds_the_container_pid(case: Case) -> None:
    b = case.bundle(["sleep", "1000"])
    pid_file = case.tmp / "pid"
    r = case.rt.create(case.id, b, "--pid-file", str(pid_file))
    assert r.returncode == 0, r.stderr
    assert int(pid_file.read_text()) == case.rt.state(case.id)["pid"]


def test_annotations_are_in_the_state(case: Case) -> None:
    case.create(["sleep", "1000"], {"annotations": {"org.opencontainers.x": "y"}})
    assert case.rt.state(case.id)["annotations"] == {"org.opencontainers.x": "y"}


def test_config_changes_after_create_do_not_apply(case: Case) -> None:
    b = case.create(sh("echo original; sleep 1000"))
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["args"] = ["sh", "-c", "echo changed"]
    (b / "config.json").write_text(json.dumps(cfg))
    case.rt.ok("start", case.id)
    deadline = time.monotonic() + 5
    while "original" not in (b / "out").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "changed" not in (b / "out").read_text()


# --- kill and delete ------------------------------------------------------------------------


def test_kill_sends_sigterm_by_default(case: Case) -> None:
    b = case.create(sh("trap 'echo term; exit 0' TERM; while :; do sleep 0.05; done"))
    case.rt.ok("start", case.id)
    time.sleep(0.2)
    case.rt.ok("kill", case.id)
    case.wait_status("stopped")
    assert "term" in (b / "out").read_text()


def test_kill_of_a_stopped_container_fails(case: Case) -> None:
    case.create(["true"])
    case.rt.ok("start", case.id)
    case.wait_status("stopped")
    assert case.rt("kill", case.id, "KILL").returncode != 0


def test_delete_of_a_running_container_fails(case: Case) -> None:
    case.create(["sleep", "1000"])
    case.rt.ok("start", case.id)
    assert case.rt("delete", case.id).returncode != 0
    assert case.status() == "running"


def test_delete_force_removes_a_running_container(case: Case) -> None:
    case.create(["sleep", "1000"])
    case.rt.ok("start", case.id)
    pid = case.rt.state(case.id)["pid"]
    case.rt.ok("delete", "--force", case.id)
    assert case.rt("state", case.id).returncode != 0
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1][0] in "ZX"


def test_delete_of_a_stopped_container_removes_it(case: Case) -> None:
    case.create(["true"])
    case.rt.ok("start", case.id)
    case.wait_status("stopped")
    case.rt.ok("delete", case.id)
    assert case.rt("state", case.id).returncode != 0


# --- process --------------------------------------------------------------------------------


def test_args_env_and_cwd(case: Case) -> None:
    out = case.out(
        sh("echo $FOO; pwd; echo $0"),
        {"process": {"env": ["FOO=bar", "PATH=/bin"], "cwd": "/tmp"}},
    )
    assert out.splitlines() == ["bar", "/tmp", "sh"]


def test_exit_status_of_run(case: Case) -> None:
    assert case.run(sh("exit 42")).returncode == 42


def test_user_and_additional_gids(case: Case) -> None:
    user = {"uid": 1000, "gid": 1001, "additionalGids": [1002, 1003]}
    out = case.out(sh("id -u; id -g; id -G"), {"process": {"user": user}})
    uid, gid, groups = out.splitlines()
    assert (uid, gid) == ("1000", "1001")
    assert set(groups.split()) == {"1001", "1002", "1003"}


def cap_mask(names: list[str]) -> int:
    numbers = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_NET_BIND_SERVICE": 10, "CAP_AUDIT_WRITE": 29}
    return sum(1 << numbers[n] for n in names)


def test_capabilities(case: Case) -> None:
    # Root's exec makes the effective set the permitted one: give both the same.
    caps = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL", "CAP_CHOWN"],
        "permitted": ["CAP_KILL", "CAP_CHOWN"],
    }
    out = case.out(sh("grep ^Cap /proc/self/status"), {"process": {"capabilities": caps}})
    fields = {k: int(v, 16) for k, v in (line.split(":\t") for line in out.splitlines())}
    assert fields["CapBnd"] == cap_mask(caps["bounding"])
    assert fields["CapEff"] == cap_mask(caps["effective"])
    assert fields["CapPrm"] == cap_mask(caps["permitted"])
    assert fields["CapInh"] == 0 and fields["CapAmb"] == 0


def test_rlimits(case: Case) -> None:
    rl = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]
    out = case.out(sh("ulimit -n; ulimit -Hn"), {"process": {"rlimits": rl}})
    assert out.split() == ["123", "456"]


def test_no_new_privileges(case: Case) -> None:
    out = case.out(sh("grep NoNewPrivs /proc/self/status"), {"process": {"noNewPrivileges": True}})
    assert out.split() == ["NoNewPrivs:", "1"]


def test_oom_score_adj(case: Case) -> None:
    out = case.out(["cat", "/proc/self/oom_score_adj"], {"process": {"oomScoreAdj": 123}})
    assert out.strip() == "123"


# --- root and mounts ------------------------------------------------------------------------


def test_readonly_root(case: Case) -> None:
    r = case.run(sh("touch /x"), {"root": {"path": "rootfs", "readonly": True}})
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    out = case.out(sh("touch /x && echo ok"), {"root": {"path": "rootfs", "readonly": False}})
    assert out.strip() == "ok"
    (case.tmp / "bundle" / "rootfs" / "x").unlink()


def test_tmpfs_mount_with_options(case: Case) -> None:
    mounts = [
        *BASE_CONFIG["mounts"],
        {
            "destination": "/data/t",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1770", "size=1m"],
        },
    ]
    out = case.out(sh("grep ' /data/t ' /proc/mounts; stat -c %a /data/t"), {"mounts": mounts})
    line, mode = out.splitlines()
    assert line.split()[2] == "tmpfs"
    opts = line.split()[3].split(",")
    assert "nosuid" in opts and "nodev" in opts and "size=1024k" in opts
    assert mode == "1770"


def test_read_only_bind_mount(case: Case) -> None:
    src = case.tmp / "shared"
    src.mkdir()
    (src / "f").write_text("host file\n")
    mounts = [
        *BASE_CONFIG["mounts"],
        {"destination": "/shared", "type": "bind", "source": str(src), "options": ["rbind", "ro"]},
    ]
    r = case.run(sh("cat /shared/f; touch /shared/g"), {"mounts": mounts})
    assert r.stdout == "host file\n"
    assert r.returncode != 0 and "Read-only file system" in r.stderr


# --- namespaces -----------------------------------------------------------------------------


def test_hostname_in_a_new_uts_namespace(case: Case) -> None:
    assert case.out(["hostname"], {"hostname": "conformance"}).strip() == "conformance"


def test_new_pid_namespace(case: Case) -> None:
    assert case.out(sh("echo $$")).strip() == "1"


def test_new_network_namespace_has_only_loopback(case: Case) -> None:
    out = case.out(["ls", "/sys/class/net"])
    assert out.split() == ["lo"]


def test_new_ipc_namespace(case: Case) -> None:
    out = case.out(["readlink", "/proc/self/ns/ipc"])
    assert out.strip() != os.readlink("/proc/self/ns/ipc")


def test_joined_namespace_by_path(case: Case) -> None:
    name = case.id[-40:]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        path = f"/run/netns/{name}"
        ns = [{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": path}]
        out = case.out(
            ["readlink", "/proc/self/ns/net"], {"linux": {"namespaces": ns}, "hostname": None}
        )
        assert out.strip() == f"net:[{os.stat(path).st_ino}]"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_user_namespace_mappings(case: Case) -> None:
    ns = [{"type": t} for t in ("pid", "mount", "ipc", "uts", "user")]
    maps = {
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "namespaces": ns,
    }
    # sysfs needs the network namespace's owner: leave /sys out.
    mounts = [m for m in BASE_CONFIG["mounts"] if m["destination"] != "/sys"]
    # The container's root (host uid 100000) must reach the rootfs: every directory above it
    # lets others through (pytest makes /tmp/pytest-of-root 0700).
    for d in (case.tmp, *case.tmp.parents):
        mode = d.stat().st_mode
        if not mode & 0o001:
            d.chmod((mode & 0o7777) | 0o011)
    out = case.out(sh("cat /proc/self/uid_map; id -u"), {"linux": maps, "mounts": mounts})
    first, uid = out.splitlines()
    assert first.split() == ["0", "100000", "65536"]
    assert uid == "0"


# --- devices, masked and read-only paths ----------------------------------------------------


def test_default_devices(case: Case) -> None:
    out = case.out(
        sh("for d in null zero full random urandom tty; do stat -c '%n %t:%T %F' /dev/$d; done")
    )
    want = {
        "/dev/null": "1:3",
        "/dev/zero": "1:5",
        "/dev/full": "1:7",
        "/dev/random": "1:8",
        "/dev/urandom": "1:9",
        "/dev/tty": "5:0",
    }
    got = {}
    for line in out.splitlines():
        name, numbers, kind = line.split(" ", 2)
        assert kind == "character special file", line
        major, minor = numbers.split(":")
        got[name] = f"{int(major, 16)}:{int(minor, 16)}"
    assert got == want


def test_linux_devices(case: Case) -> None:
    devices = [
        {
            "path": "/dev/mynull",
            "type": "c",
            "major": 1,
            "minor": 3,
            "fileMode": 0o666,
            "uid": 7,
            "gid": 8,
        },
        {"path": "/dev/sub/fifo", "type": "p", "fileMode": 0o640},
    ]
    res = {"devices": [{"allow": True, "access": "rwm"}]}
    out = case.out(
        sh(
            "stat -c '%a %u %g %t:%T %F' /dev/mynull /dev/sub/fifo; echo x > /dev/mynull && echo wrote"
        ),
        {"linux": {"devices": devices, "resources": res}},
    )
    lines = out.splitlines()
    assert lines[0] == "666 7 8 1:3 character special file"
    assert lines[1].split()[0] == "640" and lines[1].endswith("fifo")
    assert lines[2] == "wrote"


def test_device_cgroup_denies_what_is_not_allowed(case: Case) -> None:
    devices = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3}]
    res = {"devices": [{"allow": False, "access": "rwm"}]}
    # linux.devices nodes are allowed, as runc does; /dev/null stays usable (defaults).
    out = case.out(
        sh("echo x > /dev/mynull && echo ok; echo y > /dev/null && echo ok2"),
        {"linux": {"devices": devices, "resources": res}},
    )
    assert out.split() == ["ok", "ok2"]


def test_masked_paths(case: Case) -> None:
    out = case.out(
        sh("cat /proc/kcore | wc -c; ls -A /sys/firmware | wc -l"),
        {"linux": {"maskedPaths": ["/proc/kcore", "/sys/firmware"]}},
    )
    assert out.split() == ["0", "0"]


def test_readonly_paths(case: Case) -> None:
    r = case.run(
        sh("echo x > /proc/sys/kernel/domainname"),
        {"linux": {"readonlyPaths": ["/proc/sys"]}},
    )
    assert r.returncode != 0 and "Read-only file system" in r.stderr


# --- sysctl, seccomp, cgroups ---------------------------------------------------------------


def test_sysctl(case: Case) -> None:
    out = case.out(
        ["cat", "/proc/sys/net/ipv4/ip_forward"],
        {"linux": {"sysctl": {"net.ipv4.ip_forward": "1"}, "readonlyPaths": []}},
    )
    assert out.strip() == "1"


def test_seccomp_errno_rule(case: Case) -> None:
    seccomp = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    r = case.run(sh("mkdir /tmp/d"), {"linux": {"seccomp": seccomp}, "root": {"path": "rootfs"}})
    assert r.returncode != 0 and "Operation not permitted" in r.stderr


def test_cgroup_limits(case: Case) -> None:
    cg = f"/{case.id}-cg"
    res = {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}}
    case.create(["sleep", "1000"], {"linux": {"cgroupsPath": cg, "resources": res}})
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        assert (base / cg[1:] / "memory.max").read_text().strip() == str(64 << 20)
        assert (base / cg[1:] / "pids.max").read_text().strip() == "50"
    else:
        assert (base / "memory" / cg[1:] / "memory.limit_in_bytes").read_text().strip() == str(
            64 << 20
        )
        assert (base / "pids" / cg[1:] / "pids.max").read_text().strip() == "50"
    pid = case.rt.state(case.id)["pid"]
    assert cg in Path(f"/proc/{pid}/cgroup").read_text()


def test_cgroup_mount_shows_the_hosts_controller_hierarchies(case: Case) -> None:
    """/sys/fs/cgroup in a container with its own cgroup namespace: on a v1 host each v1
    hierarchy, and not a hybrid host's controller-less cgroup2 (`unified`), as runc mounts it;
    on a v2 host the cgroup2 filesystem."""
    cgroup = {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    }
    cfg = {
        "mounts": [*BASE_CONFIG["mounts"], cgroup],
        "linux": {"namespaces": [*BASE_CONFIG["linux"]["namespaces"], {"type": "cgroup"}]},
    }
    listing = case.out(sh("ls /sys/fs/cgroup"), cfg).split()
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        assert "cgroup.controllers" in listing
        return
    v1 = {
        line.split()[4].rsplit("/", 1)[1]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split(" - ")[1].startswith("cgroup ")
        and line.split()[4].startswith("/sys/fs/cgroup/")
        and line.split()[4].count("/") == 4
    }
    assert v1 and v1 <= set(listing), (case.rt.name, listing)
    assert "unified" not in listing


# --- hooks ----------------------------------------------------------------------------------


def writer(path: Path) -> dict[str, Any]:
    return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {path}"], "env": ["PATH=/bin:/usr/bin"]}


def runc_before_1_2(rt: Runtime) -> bool:
    if rt.name != "runc":
        return False
    version = rt.ok("--version").split()[2]
    return tuple(int(x) for x in version.split("+")[0].split(".")[:2]) < (1, 2)


def test_prestart_and_poststart_get_the_state(case: Case) -> None:
    hooks = {"prestart": [writer(case.tmp / "pre")], "poststart": [writer(case.tmp / "post")]}
    b = case.create(["sleep", "1000"], {"hooks": hooks})
    pre = json.loads((case.tmp / "pre").read_text())
    assert pre["id"] == case.id and pre["pid"] > 0 and pre["bundle"] == str(b)
    if runc_before_1_2(case.rt):
        # runc 1.1 runs poststart hooks from `create` (fixed in 1.2): the spec's rule is that
        # they run after `start`, which is what the rest of this check holds pyrun to.
        pytest.xfail("runc < 1.2 runs poststart hooks at create")
    assert not (case.tmp / "post").exists()
    case.rt.ok("start", case.id)
    post = json.loads((case.tmp / "post").read_text())
    assert post["id"] == case.id and post["pid"] == pre["pid"]


def test_poststop_runs_on_delete(case: Case) -> None:
    case.create(["true"], {"hooks": {"poststop": [writer(case.tmp / "stop")]}})
    case.rt.ok("start", case.id)
    case.wait_status("stopped")
    assert not (case.tmp / "stop").exists()
    case.rt.ok("delete", case.id)
    assert json.loads((case.tmp / "stop").read_text())["id"] == case.id


def test_hook_args_and_env(case: Case) -> None:
    out = case.tmp / "hook-out"
    hook = {
        "path": "/bin/sh",
        "args": ["sh", "-c", f'echo "$0 $1 $HOOKVAR" > {out}', "zero", "one"],
        "env": ["HOOKVAR=set"],
    }
    case.create(["true"], {"hooks": {"prestart": [hook]}})
    assert out.read_text() == "zero one set\n"


def test_failing_prestart_hook_fails_create(case: Case) -> None:
    b = case.bundle(["sleep", "1000"], {"hooks": {"prestart": [{"path": "/bin/false"}]}})
    r = case.rt.create(case.id, b)
    assert r.returncode != 0
    r = case.rt("state", case.id)
    assert r.returncode != 0 or json.loads(r.stdout)["status"] == "stopped"


def test_failing_poststop_hook_does_not_fail_delete(case: Case) -> None:
    case.create(["true"], {"hooks": {"poststop": [{"path": "/bin/false"}]}})
    case.rt.ok("start", case.id)
    case.wait_status("stopped")
    case.rt.ok("delete", case.id)
    assert case.rt("state", case.id).returncode != 0
