"""The native container runtime of pyrun._core: run_container on a busybox bundle whose
config.json has `runc spec`'s default shape (one change per test), and mount_overlay/unmount.

Output is captured at the fd level (the container writes to the caller's fds 1 and 2), so the
tests run the container in-process, as the CLI does."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest

from helpers import needs_root, super_options
from pyrun import _core
from pyrun.runtime.spec import DEFAULT_CAPS

pytestmark = [needs_root, pytest.mark.root]

DOCKER_CAPS = DEFAULT_CAPS  # the set pyrun run grants; the tests check its mask (a80425fb)
RUNC_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

# `runc spec` (runc 1.1), with terminal off and no cgroup device rules.
RUNC_SPEC: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {
            "bounding": RUNC_CAPS,
            "effective": RUNC_CAPS,
            "permitted": RUNC_CAPS,
            "ambient": RUNC_CAPS,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
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
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
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
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}


def spec(*args: str, **process: Any) -> dict[str, Any]:
    """runc's default spec running `args`, with process fields overridden."""
    cfg = copy.deepcopy(RUNC_SPEC)
    cfg["process"]["args"] = list(args)
    cfg["process"].update(process)
    return cfg


def run(bundle: Path, cfg: dict[str, Any], pid_file: Path | None = None) -> tuple[int, str, str]:
    """Write config.json and run the container with stdin from /dev/null and stdout/stderr
    captured; returns (status, stdout, stderr)."""
    (bundle / "config.json").write_text(json.dumps(cfg))
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = [os.dup(0), os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            rc = _core.run_container(str(bundle), pid_file=str(pid_file) if pid_file else None)
        finally:
            for fd, s in zip((0, 1, 2), saved, strict=True):
                os.dup2(s, fd)
                os.close(s)
            os.close(null)
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode(), err.read().decode()


def sh(bundle: Path, script: str, **process: Any) -> tuple[int, str, str]:
    return run(bundle, spec("sh", "-c", script, **process))


def status_field(text: str, name: str) -> str:
    m = re.search(rf"^{name}:[ \t]*(.*)$", text, re.M)
    assert m, f"{name} not in {text!r}"
    return m.group(1).strip()


def caps(names: list[str], **extra: list[str]) -> dict[str, list[str]]:
    c = {
        "bounding": names,
        "effective": names,
        "permitted": names,
        "inheritable": [],
        "ambient": [],
    }
    c.update(extra)
    return c


# --- the process ------------------------------------------------------------------------------


def test_echo_hi(bundle: Path) -> None:
    assert run(bundle, spec("echo", "hi")) == (0, "hi\n", "")


def test_exit_code(bundle: Path) -> None:
    assert sh(bundle, "exit 7")[0] == 7


def test_killed_by_signal_and_pid_file(bundle: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(run(bundle, spec("sleep", "60"), pid_file)))
    t.start()
    deadline = time.monotonic() + 20
    while not pid_file.exists():
        assert time.monotonic() < deadline, "no pid file"
        time.sleep(0.01)
    pid = int(pid_file.read_text())
    # The pid is the container's process on the host, already exec'd.
    assert os.readlink(f"/proc/{pid}/exe").endswith("busybox")
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    os.kill(pid, signal.SIGKILL)
    t.join(20)
    assert result and result[0][0] == 128 + signal.SIGKILL
    assert not list(tmp_path.glob(".pid.*")), "temporary pid file left behind"


def test_pid_one_and_ps_sees_only_the_container(bundle: Path) -> None:
    rc, out, _ = sh(bundle, "echo $$; ps -o pid,args; exit 0")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "1"
    pids = sorted(int(line.split()[0]) for line in lines[2:])
    assert pids[0] == 1 and len(pids) == 2, out


def test_hostname(bundle: Path) -> None:
    cfg = spec("hostname")
    cfg["hostname"] = "pyrun-test"
    assert run(bundle, cfg)[:2] == (0, "pyrun-test\n")


def test_env_and_cwd_created(bundle: Path) -> None:
    rc, out, _ = sh(bundle, 'pwd; echo "$FOO"', env=["PATH=/bin", "FOO=bar baz"], cwd="/work/sub")
    assert (rc, out) == (0, "/work/sub\nbar baz\n")


def test_no_host_fd_leaks(bundle: Path) -> None:
    fds = [os.open("/", os.O_RDONLY) for _ in range(3)]
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        rc, out, _ = run(bundle, spec("ls", "/proc/self/fd"))
    finally:
        for fd in fds:
            os.close(fd)
    assert rc == 0
    # 0-2 and the directory ls itself opened to list.
    assert out.split() == ["0", "1", "2", "3"]


def test_stdio_fds(bundle: Path, tmp_path: Path) -> None:
    (bundle / "config.json").write_text(json.dumps(spec("sh", "-c", "echo out; echo err >&2")))
    with open(tmp_path / "out", "w+b") as out, open(tmp_path / "err", "w+b") as err:
        assert _core.run_container(str(bundle), stdio=(out.fileno(), err.fileno())) == 0
    assert (tmp_path / "out").read_text() == "out\n"
    assert (tmp_path / "err").read_text() == "err\n"
    with pytest.raises(ValueError, match="stdio"):
        _core.run_container(str(bundle), stdio=(9999, 2))


def test_runtime_not_visible_through_proc(bundle: Path) -> None:
    rc, out, _ = sh(bundle, "readlink /proc/1/exe; readlink /proc/1/cwd; readlink /proc/1/root")
    assert (rc, out) == (0, "/bin/busybox\n/\n/\n")


def test_umask(bundle: Path) -> None:
    cfg = spec("sh", "-c", "umask")
    cfg["process"]["user"]["umask"] = 0o027
    cfg["root"]["readonly"] = False
    assert run(bundle, cfg)[:2] == (0, "0027\n")


# --- namespaces and mounts --------------------------------------------------------------------


def test_mounts_stay_in_the_container(bundle: Path) -> None:
    name = f"/pyrun-probe-{uuid.uuid4().hex[:8]}"
    cfg = spec("sh", "-c", f"grep ' {name} ' /proc/mounts")
    cfg["mounts"].append({"destination": name, "type": "tmpfs", "source": "probe"})
    rc, out, _ = run(bundle, cfg)
    assert rc == 0 and out.startswith("probe "), out
    mounts = Path("/proc/self/mountinfo").read_text()
    assert name not in mounts
    assert str(bundle / "rootfs") not in mounts
    assert (bundle / "rootfs" / name.lstrip("/")).is_dir()  # the empty mount point stays


def test_docker_default_capabilities(bundle: Path) -> None:
    rc, out, _ = run(bundle, spec("cat", "/proc/self/status", capabilities=caps(DOCKER_CAPS)))
    assert rc == 0
    assert status_field(out, "CapEff") == "00000000a80425fb"
    assert status_field(out, "CapPrm") == "00000000a80425fb"
    assert status_field(out, "CapBnd") == "00000000a80425fb"
    assert status_field(out, "CapInh") == "0000000000000000"
    assert status_field(out, "CapAmb") == "0000000000000000"


def test_no_new_privs(bundle: Path) -> None:
    _, out, _ = run(bundle, spec("cat", "/proc/self/status"))
    assert status_field(out, "NoNewPrivs") == "1"
    _, out, _ = run(bundle, spec("cat", "/proc/self/status", noNewPrivileges=False))
    assert status_field(out, "NoNewPrivs") == "0"


def test_non_root_user_with_groups_and_ambient_caps(bundle: Path) -> None:
    # busybox has no `id` applet: /proc/self/status shows the same ids.
    user = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}
    c = caps(DOCKER_CAPS, inheritable=["CAP_NET_BIND_SERVICE"], ambient=["CAP_NET_BIND_SERVICE"])
    rc, out, _ = run(bundle, spec("cat", "/proc/self/status", user=user, capabilities=c))
    assert rc == 0
    assert status_field(out, "Uid").split() == ["1000"] * 4
    assert status_field(out, "Gid").split() == ["1000"] * 4
    assert status_field(out, "Groups").split() == ["10", "20"]
    assert status_field(out, "CapAmb") == "0000000000000400"
    assert status_field(out, "CapEff") == "0000000000000400"
    assert status_field(out, "CapBnd") == "00000000a80425fb"


def test_non_root_user_without_ambient_has_no_caps(bundle: Path) -> None:
    user = {"uid": 1000, "gid": 1000}
    rc, out, _ = run(
        bundle, spec("cat", "/proc/self/status", user=user, capabilities=caps(DOCKER_CAPS))
    )
    assert rc == 0
    assert status_field(out, "CapEff") == "0000000000000000"
    assert status_field(out, "Groups") == ""


def test_readonly_root(bundle: Path) -> None:
    rc, _, err = sh(bundle, "touch /x")
    assert rc != 0 and "Read-only file system" in err
    cfg = spec("sh", "-c", "touch /x && echo ok")
    cfg["root"]["readonly"] = False
    assert run(bundle, cfg)[:2] == (0, "ok\n")
    assert (bundle / "rootfs" / "x").exists()


def test_masked_paths(bundle: Path) -> None:
    # runc's list; this kernel may lack some of them (/proc/kcore without CONFIG_PROC_KCORE).
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    cfg = spec("sh", "-c", f"cat {' '.join(files)} /etc/passwd | wc -c; ls -A /sys/firmware /root")
    cfg["linux"]["maskedPaths"] += ["/etc/passwd", "/root", "/no/such/path"]
    (bundle / "rootfs" / "root" / "secret").write_text("x")
    rc, out, err = run(bundle, cfg)
    assert rc == 0, err
    assert sorted(out.split()) == ["/root:", "/sys/firmware:", "0"]  # both empty


def test_readonly_paths(bundle: Path) -> None:
    rc, _, err = sh(bundle, "echo 1 > /proc/sys/vm/overcommit_memory")
    assert rc != 0 and "Read-only file system" in err
    rc, out, _ = sh(bundle, "grep ' /proc/sys ' /proc/mounts")
    assert rc == 0 and " ro," in out


def test_rlimit_nofile(bundle: Path) -> None:
    assert sh(bundle, "ulimit -n")[:2] == (0, "1024\n")


def test_rlimit_above_the_hard_limit_is_clamped(bundle: Path) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard + 100
    cfg = spec("sh", "-c", "ulimit -Hn")
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": want, "soft": want}]
    rc, out, _ = run(bundle, cfg)
    has_sys_resource = int(status_field(Path("/proc/self/status").read_text(), "CapEff"), 16) & (
        1 << 24
    )
    assert rc == 0
    assert int(out) == (want if has_sys_resource else hard)


def test_loopback_up_in_new_netns(bundle: Path) -> None:
    rc, out, _ = sh(bundle, "cat /sys/class/net/lo/flags; ls /sys/class/net")
    assert (rc, out.split()) == (0, ["0x9", "lo"])


def test_sysctl_and_oom_score_adj(bundle: Path) -> None:
    cfg = spec("sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/self/oom_score_adj")
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    cfg["process"]["oomScoreAdj"] = 500
    assert run(bundle, cfg)[:2] == (0, "1\n500\n")


def test_devices(bundle: Path) -> None:
    # An image whose /dev/null is a symlink to a host-sensitive file must not matter.
    dev = bundle / "rootfs" / "dev"
    dev.mkdir(exist_ok=True)
    (dev / "null").unlink(missing_ok=True)
    (dev / "null").symlink_to("/proc/sys/kernel/core_pattern")
    rc, out, _ = sh(
        bundle,
        "stat -c '%n %t:%T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty;"
        "for l in ptmx fd stdin; do readlink /dev/$l; done; echo x > /dev/null",
    )
    assert rc == 0, out
    assert out.split("\n")[:6] == [
        "/dev/null 1:3",
        "/dev/zero 1:5",
        "/dev/full 1:7",
        "/dev/random 1:8",
        "/dev/urandom 1:9",
        "/dev/tty 5:0",
    ]
    assert out.split("\n")[6:9] == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0"]


def test_bind_mounts(bundle: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("hello\n")
    single = tmp_path / "single.txt"
    single.write_text("one\n")
    cfg = spec("sh", "-c", "cat /data/f /etc/single.txt; touch /data/g")
    cfg["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro"]},
        {
            "destination": "/etc/single.txt",
            "type": "none",
            "source": str(single),
            "options": ["bind"],
        },
    ]
    rc, out, err = run(bundle, cfg)
    assert out == "hello\none\n"
    assert rc != 0 and "Read-only file system" in err
    assert not (data / "g").exists()


def test_user_namespace(tmp_path: Path, busybox_rootfs: Path) -> None:
    # The mapped root must reach the rootfs: pytest's temporary directories are 0700.
    bundle = Path(tempfile.mkdtemp(prefix="pyrun-userns-"))
    os.chmod(bundle, 0o755)
    try:
        shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True)
        _user_namespace(bundle)
    finally:
        shutil.rmtree(bundle)


def _user_namespace(bundle: Path) -> None:
    cfg = spec("sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; stat -c %t:%T /dev/null")
    # cgroup2 can only be mounted from a user namespace that owns the cgroup namespace.
    cfg["linux"]["namespaces"] += [{"type": "user"}, {"type": "cgroup"}]
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    rc, out, err = run(bundle, cfg)
    assert rc == 0, err
    assert [line.split() for line in out.splitlines()] == [["0", "100000", "65536"]] * 2 + [["1:3"]]


def test_join_namespaces_by_path(bundle: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sleeper = threading.Thread(target=lambda: run(bundle, spec("sleep", "5"), pid_file))
    sleeper.start()
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists():
            assert time.monotonic() < deadline, "no pid file"
            time.sleep(0.01)
        pid = int(pid_file.read_text())
        before = os.readlink("/proc/thread-self/ns/pid_for_children")
        cfg = spec("sh", "-c", "ps -o pid,args; readlink /proc/self/ns/net; exit 0")
        cfg["linux"]["namespaces"] = [
            {"type": "pid", "path": f"/proc/{pid}/ns/pid"},
            {"type": "network", "path": f"/proc/{pid}/ns/net"},
            {"type": "mount"},
            {"type": "uts"},
        ]
        b2 = tmp_path / "b2"
        b2.mkdir()
        (b2 / "rootfs").symlink_to(bundle / "rootfs")
        rc, out, err = run(b2, cfg)
        assert rc == 0, err
        assert "1 sleep 5" in out
        assert out.splitlines()[-1] == os.readlink(f"/proc/{pid}/ns/net")
        # The calling thread's pid namespace for children was entered and left again.
        assert os.readlink("/proc/thread-self/ns/pid_for_children") == before
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        sleeper.join(20)


# --- escapes ----------------------------------------------------------------------------------


def test_symlinked_destination_stays_in_the_rootfs(bundle: Path) -> None:
    name = f"pyrun-escape-{uuid.uuid4().hex[:8]}"
    (bundle / "rootfs" / "evil").symlink_to("/")
    (bundle / "rootfs" / "evil2").symlink_to("../../../../../../..")
    cfg = spec("sh", "-c", f"grep -c ' /{name}-[ab] ' /proc/mounts")
    cfg["mounts"] += [
        {"destination": f"/evil/{name}-a", "type": "tmpfs", "source": "tmpfs"},
        {"destination": f"/evil2/{name}-b", "type": "tmpfs", "source": "tmpfs"},
    ]
    assert run(bundle, cfg)[:2] == (0, "2\n")
    assert not Path(f"/{name}-a").exists() and not Path(f"/{name}-b").exists()
    assert (bundle / "rootfs" / f"{name}-a").is_dir()
    assert (bundle / "rootfs" / f"{name}-b").is_dir()


@pytest.mark.parametrize("target", ["proc", "sys", "dev"])
def test_symlinked_special_dirs_are_refused(bundle: Path, target: str) -> None:
    p = bundle / "rootfs" / target
    shutil.rmtree(p, ignore_errors=True)
    p.unlink(missing_ok=True)
    p.symlink_to("/tmp")
    with pytest.raises(_core.StartError) as e:
        run(bundle, spec("true"))
    assert e.value.args == (f"mount target /{target} is a symlink in the image", 125)


def test_sysctl_refuses_a_decoy_over_proc_sys(bundle: Path, tmp_path: Path) -> None:
    decoy = tmp_path / "decoy"
    (decoy / "net" / "ipv4").mkdir(parents=True)
    (decoy / "net" / "ipv4" / "ip_forward").write_text("0")
    cfg = spec("true")
    cfg["mounts"].append(
        {"destination": "/proc/sys", "type": "bind", "source": str(decoy), "options": ["bind"]}
    )
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    with pytest.raises(_core.StartError) as e:
        run(bundle, cfg)
    assert e.value.args == (
        "set sysctl net.ipv4.ip_forward: /proc/sys is not procfs in the container",
        125,
    )
    assert (decoy / "net" / "ipv4" / "ip_forward").read_text() == "0"


# --- failures ---------------------------------------------------------------------------------


def test_command_not_found(bundle: Path) -> None:
    with pytest.raises(_core.StartError) as e:
        run(bundle, spec("nosuchcmd", "x"))
    assert e.value.args == ('exec: "nosuchcmd": executable file not found in $PATH', 127)


def test_explicit_path_missing(bundle: Path) -> None:
    with pytest.raises(_core.StartError) as e:
        run(bundle, spec("/no/such"))
    assert e.value.args == ('exec: "/no/such": no such file or directory', 127)


def test_not_executable(bundle: Path) -> None:
    with pytest.raises(_core.StartError) as e:
        run(bundle, spec("/etc/passwd"))
    assert e.value.args == ('exec: "/etc/passwd": permission denied', 126)
    (bundle / "rootfs" / "bin" / "script").write_text("#!/bin/sh\necho no\n")
    with pytest.raises(_core.StartError) as e:
        run(bundle, spec("script"))
    assert e.value.args == ('exec: "script": permission denied', 126)


def test_setup_failure_message(bundle: Path) -> None:
    cfg = spec("true")
    cfg["mounts"].append({"destination": "/x", "type": "tmpfs", "options": ["bogus=1"]})
    with pytest.raises(_core.StartError) as e:
        run(bundle, cfg)
    msg, code = e.value.args
    assert code == 125
    assert msg.startswith("mount /x (tmpfs) failed: Invalid argument"), msg
    assert "bogus" in msg and "\n" not in msg


def test_terminal_from_the_containers_devpts(bundle: Path) -> None:
    """process.terminal: the output comes through a pty of the container's own devpts,
    sized by process.consoleSize, even when the caller has no terminal."""
    cfg = spec("sh", "-c", "tty; stty size; exit 4", terminal=True)
    cfg["process"]["consoleSize"] = {"height": 12, "width": 34}
    status, out, err = run(bundle, cfg)
    assert status == 4, err
    assert out == "/dev/pts/0\r\n12 34\r\n"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c["process"]["user"].update(uid="x"), "process.user.uid"),
        (lambda c: c["mounts"].append({"type": "tmpfs"}), "mounts[7]"),
        (
            lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NOPE"),
            "process.capabilities.bounding[3]",
        ),
        (
            lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_X", "hard": 1, "soft": 1}),
            "process.rlimits[1].type",
        ),
        (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), "linux.namespaces[5].type"),
        (lambda c: c["process"].update(args=[]), "process.args"),
        (lambda c: c.pop("ociVersion"), "ociVersion"),
    ],
)
def test_malformed_config(bundle: Path, mutate: Any, field: str) -> None:
    cfg = spec("true")
    mutate(cfg)
    with pytest.raises(ValueError, match=re.escape(field)):
        run(bundle, cfg)


def test_invalid_json(bundle: Path) -> None:
    (bundle / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"^config\.json: "):
        _core.run_container(str(bundle))


# --- the caller -------------------------------------------------------------------------------


def test_signal_handlers_restored(bundle: Path) -> None:
    """The forwarding handlers a run installs go again: the caller's own handlers see the
    signals afterwards. (A handler of the test's own: a process started in the background by
    a non-interactive shell inherits SIGINT ignored, and Python then installs none.)"""
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, _frame: got.append(signum))
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
        assert run(bundle, spec("true"))[0] == 0
        assert {s: signal.getsignal(s) for s in before} == before
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, old)


def test_signals_are_forwarded(bundle: Path, tmp_path: Path) -> None:
    script = "trap 'echo got TERM; exit 3' TERM; touch /ready; while :; do sleep 0.05; done"
    cfg = spec("sh", "-c", script)
    cfg["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    ready = bundle / "rootfs" / "ready"
    pid_file = tmp_path / "pid"
    code = textwrap.dedent(f"""
        import sys
        from pyrun import _core
        sys.exit(_core.run_container({str(bundle)!r}, pid_file={str(pid_file)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    try:
        while not ready.exists():  # sh has installed its trap (PID 1 ignores TERM without)
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert pid_file.exists()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, out) == (3, "got TERM\n")


def test_concurrent_runs_from_threads(bundle: Path, tmp_path: Path) -> None:
    bundles = []
    for i in range(4):
        b = tmp_path / f"b{i}"
        b.mkdir()
        (b / "rootfs").symlink_to(bundle / "rootfs")
        cfg = spec("sh", "-c", f"exit {i + 10}")
        (b / "config.json").write_text(json.dumps(cfg))
        bundles.append(b)
    results: dict[int, list[int]] = {i: [] for i in range(4)}
    stop = threading.Event()

    def churn() -> None:  # allocate and free under the GIL-free runs
        while not stop.is_set():
            _ = [bytes(1000) for _ in range(1000)]

    def worker(i: int) -> None:
        for _ in range(5):
            results[i].append(_core.run_container(str(bundles[i])))

    churner = threading.Thread(target=churn)
    churner.start()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    churner.join()
    assert results == {i: [i + 10] * 5 for i in range(4)}


# --- overlay ----------------------------------------------------------------------------------


def _whiteout(path: Path) -> None:
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))


@pytest.mark.parametrize("method", ["new", "legacy"])
def test_overlay_three_lowers_and_upper(tmp_path: Path, method: Literal["new", "legacy"]) -> None:
    l1, l2, l3, upper, work, target = (
        tmp_path / n for n in ("l1", "l2", "l3", "up", "work", "mnt")
    )
    for d in (l1, l2, l3, upper, work, target):
        d.mkdir()
    (l3 / "bottom").write_text("3")
    (l3 / "shared").write_text("3")
    (l3 / "gone").write_text("3")
    (l2 / "shared").write_text("2")
    (l2 / "mid").write_text("2")
    (l1 / "top").write_text("1")
    _whiteout(l1 / "gone")
    used = _core.mount_overlay(
        [str(l1), str(l2), str(l3)], str(target), upper=str(upper), work=str(work),
        method=method, links_dir=str(tmp_path / "links"),
    )  # fmt: skip
    try:
        assert used == method
        assert sorted(os.listdir(target)) == ["bottom", "mid", "shared", "top"]
        assert (target / "shared").read_text() == "2"
        (target / "new").write_text("n")
        (target / "mid").unlink()
        assert (upper / "new").read_text() == "n"
        st = os.lstat(upper / "mid")
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0)
        assert (l2 / "mid").exists()
    finally:
        _core.unmount(str(target))
    assert os.listdir(target) == []


def test_overlay_read_only_without_upper(tmp_path: Path) -> None:
    # Without an upper layer overlayfs needs at least two lowers.
    lower, lower2, target = tmp_path / "l", tmp_path / "l2", tmp_path / "mnt"
    for d in (lower, lower2, target):
        d.mkdir()
    (lower / "f").write_text("x")
    assert _core.mount_overlay([str(lower), str(lower2)], str(target)) == "new"
    try:
        assert (target / "f").read_text() == "x"
        with pytest.raises(OSError):
            (target / "g").write_text("y")
    finally:
        _core.unmount(str(target), detach=True)


@pytest.mark.parametrize("method", ["legacy", "new"])
def test_overlay_many_long_lowers(tmp_path: Path, method: Literal["new", "legacy"]) -> None:
    base = tmp_path / ("d" * 100) / ("e" * 100)
    lowers = []
    for i in range(120):
        d = base / f"layer-{i:03d}-{'x' * 60}"
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        lowers.append(str(d))
    assert len(":".join(lowers)) > 4096
    target, upper, work = tmp_path / "mnt", tmp_path / "up", tmp_path / "work"
    for d in (target, upper, work):
        d.mkdir()
    links = tmp_path / "links"
    used = _core.mount_overlay(
        lowers, str(target), upper=str(upper), work=str(work), method=method, links_dir=str(links)
    )
    try:
        assert used == method
        assert sorted(os.listdir(target)) == sorted(f"f{i}" for i in range(120))
        assert (target / "f7").read_text() == "7"
        if method == "legacy":
            assert len(os.listdir(links)) == 120
            assert all(len(n) == 10 for n in os.listdir(links))
    finally:
        _core.unmount(str(target))


@pytest.mark.parametrize("method", ["legacy", "new"])
def test_overlay_volatile(tmp_path: Path, method: Literal["new", "legacy"]) -> None:
    """`volatile` reaches the kernel on both paths; overlayfs then marks the work dir and refuses
    that upper until the mark is gone."""
    lower, upper, work, target = (tmp_path / n for n in ("l", "u", "w", "mnt"))
    for d in (lower, upper, work, target):
        d.mkdir()
    opts = dict(upper=str(upper), work=str(work), method=method, links_dir=str(tmp_path / "ln"))
    assert _core.mount_overlay([str(lower)], str(target), volatile=True, **opts) == method  # type: ignore[arg-type]
    try:
        assert "fsync=volatile" in super_options(target)
        (target / "f").write_text("kept in the page cache")
    finally:
        _core.unmount(str(target))
    assert (work / "work" / "incompat" / "volatile").is_dir()
    with pytest.raises(OSError):
        _core.mount_overlay([str(lower)], str(target), **opts)  # type: ignore[arg-type]
    shutil.rmtree(work / "work" / "incompat")
    _core.mount_overlay([str(lower)], str(target), **opts)  # type: ignore[arg-type]
    try:
        assert "fsync=volatile" not in super_options(target)
        assert (target / "f").read_text() == "kept in the page cache"
    finally:
        _core.unmount(str(target))


def test_unmount_of_unmounted_is_fine(tmp_path: Path) -> None:
    _core.unmount(str(tmp_path))
    _core.unmount(str(tmp_path / "missing"), detach=True)


def test_overlay_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _core.mount_overlay([], str(tmp_path))
    with pytest.raises(ValueError):
        _core.mount_overlay([str(tmp_path)], str(tmp_path), upper=str(tmp_path))
    with pytest.raises(ValueError):
        _core.mount_overlay([str(tmp_path)], str(tmp_path), method="legacy")
    with pytest.raises(ValueError):
        _core.mount_overlay([str(tmp_path)], str(tmp_path), method="bogus")  # type: ignore[arg-type]
