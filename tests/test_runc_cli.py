"""pyrun-runtime's runc command line: the lifecycle (create, start, state, kill, delete, run,
exec), the control commands (ps, pause/resume, update, events, list), the console socket,
hooks, spec/features, and bad input answered as runc does (one line, exit status 1)."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import needs_root
from ocibundle import Runtime, make_bundle, pyrun_runtime, unpack_rootfs

pytestmark = needs_root


@pytest.fixture(scope="module")
def master_rootfs(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_rootfs(busybox_tar, tmp_path_factory.mktemp("rootfs") / "rootfs")


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    r = Runtime("pyrun-runtime", pyrun_runtime(), tmp_path / "state")
    yield r
    r.cleanup()


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_create_start_state_kill_delete(rt: Runtime, master_rootfs: Path, tmp_path: Path) -> None:
    b = make_bundle(
        master_rootfs,
        tmp_path / "b",
        ["sh", "-c", "echo started; exec sleep 1000"],
        {"annotations": {"org.example.k": "v"}},
    )
    pid_file = tmp_path / "pid"
    r = rt.create("c1", b, "--pid-file", str(pid_file))
    assert r.returncode == 0, r.stderr
    st = rt.state("c1")
    assert st["status"] == "created"
    assert st["id"] == "c1" and st["bundle"] == str(b)
    assert st["annotations"] == {"org.example.k": "v"}
    assert st["ociVersion"] == "1.0.2"
    assert int(pid_file.read_text()) == st["pid"] > 0
    assert (b / "out").read_text() == ""  # nothing ran yet
    assert json.loads(rt.ok("list", "--format", "json"))[0]["status"] == "created"

    rt.ok("start", "c1")
    wait_for(lambda: (b / "out").read_text() == "started\n")
    assert rt.state("c1")["status"] == "running"
    assert rt.ok("list", "-q").split() == ["c1"]

    rt.ok("kill", "c1", "9")  # positional and numeric, as containerd sends it
    wait_for(lambda: rt.state("c1")["status"] == "stopped")
    assert rt.state("c1")["pid"] == 0
    rt.ok("delete", "c1")
    assert rt("state", "c1").returncode == 1
    assert rt.ok("list", "-q") == ""


def test_kill_by_name_and_all(rt: Runtime, master_rootfs: Path, tmp_path: Path) -> None:
    b = make_bundle(
        master_rootfs,
        tmp_path / "b",
        ["sh", "-c", "trap 'echo got-term; exit 0' TERM; sleep 1000 & wait"],
    )
    assert rt.create("c2", b).returncode == 0
    rt.ok("start", "c2")
    wait_for(lambda: len(json.loads(rt.ok("ps", "--format", "json", "c2"))) == 2)
    rt.ok("kill", "c2", "SIGTERM")
    wait_for(lambda: rt.state("c2")["status"] == "stopped")
    assert "got-term" in (b / "out").read_text()
    rt.ok("delete", "c2")
    # Without a pid namespace the init's children outlive it; --all reaches them through
    # the cgroup.
    ns = [{"type": t} for t in ("network", "ipc", "uts", "mount")]
    b = make_bundle(
        master_rootfs,
        tmp_path / "b2",
        ["sh", "-c", "sleep 1000 & exec sleep 1001"],
        {"linux": {"namespaces": ns}},
    )
    assert rt.create("c3", b).returncode == 0
    rt.ok("start", "c3")
    wait_for(lambda: len(json.loads(rt.ok("ps", "--format", "json", "c3"))) == 2)
    rt.ok("kill", "c3", "KILL")
    wait_for(lambda: rt.state("c3")["status"] == "stopped")
    assert len(json.loads(rt.ok("ps", "--format", "json", "c3"))) == 1
    rt.ok("kill", "--all", "c3", "KILL")
    wait_for(lambda: json.loads(rt.ok("ps", "--format", "json", "c3")) == [])
    rt.ok("delete", "c3")


def test_run_foreground_exit_status_and_cleanup(
    rt: Runtime, master_rootfs: Path, tmp_path: Path
) -> None:
    b = make_bundle(master_rootfs, tmp_path / "b", ["sh", "-c", "echo out; echo err >&2; exit 7"])
    r = rt("run", "--bundle", str(b), "r1")
    assert r.returncode == 7
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert rt.ok("list", "-q") == ""
    r = rt("run", "--keep", "--bundle", str(b), "r1")
    assert r.returncode == 7
    assert rt.state("r1")["status"] == "stopped"
    rt.ok("delete", "r1")


def test_no_pivot_moves_the_root_and_chroots(
    rt: Runtime, master_rootfs: Path, tmp_path: Path
) -> None:
    """--no-pivot (runc's, for roots pivot_root refuses): the container still sees only its
    rootfs, with its mounts, hostname and masked paths."""
    script = "ls /bin/busybox && hostname && cat /proc/kcore | wc -c && grep -c ' /proc ' /proc/self/mountinfo"
    b = make_bundle(master_rootfs, tmp_path / "np", ["sh", "-c", script])
    r = rt("run", "--no-pivot", "--bundle", str(b), "np")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/bin/busybox", "oci", "0", "1"], r.stdout
    assert rt.ok("list", "-q") == ""


def test_run_detached_and_exec(rt: Runtime, master_rootfs: Path, tmp_path: Path) -> None:
    b = make_bundle(master_rootfs, tmp_path / "b", ["sleep", "1000"])
    with (b / "out").open("w") as out:
        r = rt("run", "-d", "--bundle", str(b), "e1", stdout=out, stderr=out)
    assert r.returncode == 0, (b / "out").read_text()
    assert rt.state("e1")["status"] == "running"
    # Command-line form, with its exit status and output.
    r = rt("exec", "e1", "sh", "-c", "echo $(hostname)-$(id -u); exit 3")
    assert (r.returncode, r.stdout) == (3, "oci-0\n")
    r = rt("exec", "--user", "65534:65534", "--env", "X=1", "e1", "sh", "-c", "echo $(id -u)$X")
    assert r.stdout == "655341\n"
    # --process FILE, as containerd sends it, detached with a pid file.
    proc = {
        "args": ["sh", "-c", "echo $$ > /tmp/x; exec sleep 1000"],
        "env": ["PATH=/bin"],
        "cwd": "/tmp",
        "user": {"uid": 0, "gid": 0},
    }
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps(proc))
    with (tmp_path / "exec-out").open("w") as out:
        r = rt(
            "exec",
            "--process",
            str(pf),
            "--detach",
            "--pid-file",
            str(tmp_path / "epid"),
            "e1",
            stdout=out,
            stderr=out,
        )
    assert r.returncode == 0, (tmp_path / "exec-out").read_text()
    epid = int((tmp_path / "epid").read_text())
    assert epid in json.loads(rt.ok("ps", "--format", "json", "e1"))
    assert "sleep 1000" in rt.ok("ps", "e1")
    rt.ok("delete", "--force", "e1")
    assert not Path(f"/proc/{epid}/cmdline").exists() or Path(
        f"/proc/{epid}/stat"
    ).read_text().split(") ")[1].startswith("Z")


def test_pause_resume_update_events(rt: Runtime, master_rootfs: Path, tmp_path: Path) -> None:
    b = make_bundle(master_rootfs, tmp_path / "b", ["sleep", "1000"])
    assert rt.create("p1", b).returncode == 0
    rt.ok("start", "p1")
    rt.ok("pause", "p1")
    assert rt.state("p1")["status"] == "paused"
    r = rt("pause", "p1")
    assert r.returncode == 1 and "already paused" in r.stderr
    r = rt("exec", "p1", "true")
    assert r.returncode == 1 and "paused" in r.stderr
    rt.ok("resume", "p1")
    assert rt.state("p1")["status"] == "running"
    rt.ok("update", "--resources", "-", "p1", input=json.dumps({"pids": {"limit": 42}}))
    ev = json.loads(rt.ok("events", "--stats", "p1"))
    assert ev["type"] == "stats" and ev["id"] == "p1"
    assert ev["data"]["pids"] == {"current": 1, "limit": 42}
    rt.ok("update", "--memory", "64m", "p1")
    ev = json.loads(rt.ok("events", "--stats", "p1"))
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    rt.ok("delete", "-f", "p1")


def test_console_socket_gets_the_pty(rt: Runtime, master_rootfs: Path, tmp_path: Path) -> None:
    b = make_bundle(
        master_rootfs,
        tmp_path / "b",
        ["sh", "-c", "tty; ls -l /dev/console; read x; echo got-$x"],
        {"process": {"terminal": True}},
    )
    sock_path = tmp_path / "console.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    srv.listen(1)
    got: list[int] = []

    def accept() -> None:
        conn, _ = srv.accept()
        fds = array.array("i")
        _, anc, _, _ = conn.recvmsg(64, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: fds.itemsize])
        got.extend(fds)
        conn.close()

    t = threading.Thread(target=accept)
    t.start()
    r = rt.create("t1", b, "--console-socket", str(sock_path))
    t.join(10)
    srv.close()
    assert r.returncode == 0, r.stderr
    assert len(got) == 1
    master = got[0]
    rt.ok("start", "t1")
    os.write(master, b"hello\n")
    out = b""
    deadline = time.monotonic() + 5
    while b"got-hello" not in out and time.monotonic() < deadline:
        try:
            out += os.read(master, 4096)
        except OSError:
            break
    os.close(master)
    text = out.decode()
    assert "/dev/pts/0" in text
    assert "got-hello" in text
    # /dev/console is a bind of the pty: a character device 136:0.
    assert "136,   0" in text or "136, 0" in text
    # Without a console socket a terminal container cannot be created detached.
    r = rt.create("t2", b)
    assert r.returncode == 1 and "console socket" in r.stderr


def test_hooks_get_the_state_on_stdin(rt: Runtime, master_rootfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    out.mkdir()

    def hook(name: str) -> dict[str, Any]:
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}/{name}"]}

    hooks = {
        k: [hook(k)]
        for k in ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    }
    # startContainer runs in the container: its path and the file are the container's.
    hooks["startContainer"] = [
        {
            "path": "/bin/sh",
            "args": [
                "sh",
                "-c",
                "cat > /tmp/started; echo >> /tmp/started; hostname >> /tmp/started",
            ],
        }
    ]
    b = make_bundle(
        master_rootfs,
        tmp_path / "b",
        ["sh", "-c", "cat /tmp/started; exec sleep 1000"],
        {"hooks": hooks, "root": {"path": "rootfs", "readonly": False}},
    )
    assert rt.create("h1", b).returncode == 0
    for k in ("prestart", "createRuntime", "createContainer"):
        st = json.loads((out / k).read_text())
        assert st["status"] == "creating" and st["id"] == "h1" and st["pid"] > 0, k
    assert not (out / "poststart").exists()
    rt.ok("start", "h1")
    assert json.loads((out / "poststart").read_text())["status"] == "running"
    wait_for(lambda: "oci" in (b / "out").read_text())
    started = (b / "out").read_text()
    assert json.loads(started.splitlines()[0])["status"] == "created"
    rt.ok("kill", "h1", "KILL")
    wait_for(lambda: rt.state("h1")["status"] == "stopped")
    rt.ok("delete", "h1")
    assert json.loads((out / "poststop").read_text())["status"] == "stopped"


def test_failing_prestart_hook_fails_create(
    rt: Runtime, master_rootfs: Path, tmp_path: Path
) -> None:
    hooks = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 2"]}]}
    b = make_bundle(master_rootfs, tmp_path / "b", ["sleep", "1000"], {"hooks": hooks})
    r = rt.create("f1", b)
    assert r.returncode == 1
    assert "prestart hook #0 (/bin/sh): exit status 2: broken" in r.stderr
    assert rt("state", "f1").returncode == 1
    # A hook past its timeout is killed and fails the create the same way.
    hooks = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}
    b = make_bundle(master_rootfs, tmp_path / "b", ["sleep", "1000"], {"hooks": hooks})
    t0 = time.monotonic()
    r = rt.create("f1", b)
    assert r.returncode == 1 and "timed out after 1 s" in r.stderr
    assert time.monotonic() - t0 < 10


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and "panicked" not in r.stderr
    return lines[0]


def test_bad_input_is_one_runc_style_line(rt: Runtime, master_rootfs: Path, tmp_path: Path) -> None:
    b = make_bundle(master_rootfs, tmp_path / "b", ["sleep", "1000"])
    # Unknown container, for every command that takes one.
    for cmd in (["state"], ["start"], ["kill"], ["delete"], ["pause"], ["ps"], ["exec"]):
        line = one_line_error(rt(*cmd, "nope", *(["true"] if cmd == ["exec"] else [])))
        assert 'level=error msg="container does not exist"' in line, cmd
    assert rt("delete", "--force", "nope").returncode == 0  # as runc
    # Malformed config.json: the field and why.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"ociVersion": "1.0.2", "process": {"args": "sh"}}')
    line = one_line_error(rt.create("x", bad))
    assert "config.json: process.args: invalid type: string" in line
    (bad / "config.json").write_text("{not json")
    assert "config.json" in one_line_error(rt.create("x", bad))
    assert rt("state", "x").returncode == 1  # nothing left behind
    # A missing executable fails the create, as runc's does.
    nox = make_bundle(master_rootfs, tmp_path / "nox", ["no-such-cmd"])
    assert "executable file not found" in one_line_error(rt.create("x", nox))
    # Duplicate create, start twice, delete of a running container.
    assert rt.create("d1", b).returncode == 0
    assert "container with id exists: d1" in one_line_error(rt.create("d1", b))
    rt.ok("start", "d1")
    assert "cannot start an already running container" in one_line_error(rt("start", "d1"))
    line = one_line_error(rt("delete", "d1"))
    assert "cannot delete container d1 that is not stopped: running" in line
    rt.ok("kill", "d1", "KILL")
    wait_for(lambda: rt.state("d1")["status"] == "stopped")
    assert "cannot start a container that has stopped" in one_line_error(rt("start", "d1"))
    assert "container not running" in one_line_error(rt("kill", "d1"))
    rt.ok("delete", "d1")
    # IDs, signals, flags, arity.
    assert "invalid container id format" in one_line_error(rt.create("../x", b))
    assert "unknown signal" in one_line_error(rt("kill", "d1", "SIGNOPE"))
    assert "flag provided but not defined: -nope" in one_line_error(rt("state", "--nope", "a"))
    assert "requires a minimum of 1 argument" in one_line_error(rt("start"))
    # --log-format json: the error as a JSON line in the log file (what containerd reads).
    log = tmp_path / "log.json"
    r = rt("--log", str(log), "--log-format", "json", "state", "nope")
    assert r.returncode == 1 and r.stderr == "container does not exist\n"
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"] == "container does not exist"


def test_spec_features_version(rt: Runtime, tmp_path: Path) -> None:
    r = subprocess.run(
        [rt.binary, "spec"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    r = subprocess.run([rt.binary, "spec"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "exists" in r.stderr
    feats = json.loads(rt.ok("features"))
    assert "startContainer" in feats["hooks"]
    assert "CAP_SYS_ADMIN" in feats["linux"]["capabilities"]
    assert rt.ok("--version").startswith("pyrun-runtime version ")


def test_runtime_binary_is_out_of_the_containers_reach(
    rt: Runtime, master_rootfs: Path, tmp_path: Path
) -> None:
    """CVE-2019-5736: pyrun-runtime is not dumpable, so even a root container process that
    can see it (no pid namespace here) cannot open its /proc/PID/exe, the host binary."""
    ns = [{"type": t} for t in ("network", "ipc", "uts", "mount")]
    b = make_bundle(
        master_rootfs,
        tmp_path / "b",
        ["sh", "-c", "cat /proc/$PPID/exe > /dev/null && echo opened || echo refused"],
        {"linux": {"namespaces": ns}},
    )
    r = rt("run", "--bundle", str(b), "cve")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "refused", r.stderr


def test_systemd_cgroup_paths_without_systemd(
    rt: Runtime, master_rootfs: Path, tmp_path: Path
) -> None:
    """--systemd-cgroup: cgroupsPath "slice:prefix:name" becomes systemd's cgroup
    (/<slice path>/<prefix>-<name>.scope); where systemd is not PID 1 it is made on cgroupfs."""
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here: the scope would be a real unit")
    b = make_bundle(
        master_rootfs,
        tmp_path / "b",
        ["sleep", "1000"],
        {
            "linux": {
                "cgroupsPath": "pyrun-test.slice:pyrunt:sd1",
                "resources": {"pids": {"limit": 9}},
            }
        },
    )
    r = rt.create("sd1", b, global_flags=("--systemd-cgroup",))
    assert r.returncode == 0, r.stderr
    pid = rt.state("sd1")["pid"]
    want = "/pyrun.slice/pyrun-test.slice/pyrunt-sd1.scope"
    assert f":{want}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    base = Path("/sys/fs/cgroup")
    pids_dir = (
        base / want[1:] if (base / "cgroup.controllers").exists() else base / "pids" / want[1:]
    )
    assert (pids_dir / "pids.max").read_text().strip() == "9"
    rt.ok("delete", "--force", "sd1")
    assert not pids_dir.exists()
    # Without --systemd-cgroup the same path is refused with the reason.
    line = one_line_error(rt.create("sd2", b))
    assert "pass --systemd-cgroup" in line
