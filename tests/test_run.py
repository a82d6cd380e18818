"""`pyrun run` end to end on the busybox test image: Docker's command merging, users, env,
capabilities, read-only roots, exit codes (125/126/127 and the process's own), container
records, and the image's shared layers staying untouched."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers import PyrunRunner, needs_root
from pyrun.client import Client, ContainerError
from pyrun.errors import ImageInUse
from pyrun.store import Store

pytestmark = needs_root

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:run", changes=['CMD ["echo", "default cmd"]'])
    return client


def cap(output: bytes, field: str) -> str:
    m = re.search(rf"^{field}:\s*([0-9a-f]+)$", output.decode(), re.M)
    assert m, output
    return m.group(1)


def test_echo_and_default_cmd(bb: Client) -> None:
    assert bb.containers.run("bb:run", ["echo", "hello"], remove=True) == b"hello\n"
    assert bb.containers.run("bb:run", remove=True) == b"default cmd\n"


def test_exit_status_and_container_error(bb: Client) -> None:
    with pytest.raises(ContainerError) as info:
        bb.containers.run("bb:run", ["sh", "-c", "echo oops >&2; exit 7"], name="failing")
    assert info.value.exit_status == 7
    assert "oops" in str(info.value)
    c = bb.containers.get("failing")
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 7


def test_pid1_hostname_and_isolation(bb: Client) -> None:
    out = bb.containers.run(
        "bb:run",
        ["sh", "-c", "echo $$; hostname; ls /proc | grep -c '^[0-9]'"],
        remove=True,
        hostname="box",
    )
    pid, host, nprocs = out.decode().split()
    assert pid == "1" and host == "box" and int(nprocs) <= 3


def test_docker_default_capabilities(bb: Client) -> None:
    status = bb.containers.run("bb:run", ["cat", "/proc/self/status"], remove=True)
    assert cap(status, "CapEff") == DOCKER_DEFAULT_CAPS
    assert cap(status, "CapBnd") == DOCKER_DEFAULT_CAPS
    dropped = bb.containers.run(
        "bb:run", ["cat", "/proc/self/status"], remove=True, cap_drop=["ALL"]
    )
    assert cap(dropped, "CapEff") == "0000000000000000"
    added = bb.containers.run(
        "bb:run", ["cat", "/proc/self/status"], remove=True, cap_add=["SYS_ADMIN"]
    )
    assert int(cap(added, "CapEff"), 16) == int(DOCKER_DEFAULT_CAPS, 16) | (1 << 21)
    nnp = bb.containers.run(
        "bb:run", ["cat", "/proc/self/status"], remove=True, security_opt=["no-new-privileges"]
    )
    assert re.search(rb"NoNewPrivs:\s*1", nnp)


def test_privileged(bb: Client) -> None:
    with open("/proc/self/status") as f:
        host_bounding = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
    status = bb.containers.run("bb:run", ["cat", "/proc/self/status"], remove=True, privileged=True)
    assert cap(status, "CapEff") == host_bounding
    assert re.search(rb"Seccomp:\s*0", status)
    assert bb.containers.run("bb:run", ["cat", "/proc/timer_list"], remove=True) == b""
    unmasked = bb.containers.run(
        "bb:run", ["head", "-c", "1", "/proc/timer_list"], remove=True, privileged=True
    )
    assert unmasked != b""


def test_user_env_workdir(bb: Client) -> None:
    out = bb.containers.run("bb:run", ["id"], remove=True, user="nobody").decode()
    assert "uid=65534(nobody)" in out and "gid=65534(nogroup)" in out
    out = bb.containers.run(
        "bb:run",
        ["sh", "-c", "echo $FOO $HOME; pwd"],
        remove=True,
        environment={"FOO": "bar"},
        working_dir="/tmp",
    )
    assert out.decode().split() == ["bar", "/root", "/tmp"]
    out = bb.containers.run("bb:run", ["cat", "/proc/self/status"], remove=True, user="1000:1000")
    assert cap(out, "CapEff") == DOCKER_DEFAULT_CAPS  # ambient keeps Docker's set for non-root


def test_read_only_root_and_masked_paths(bb: Client) -> None:
    with pytest.raises(ContainerError, match="Read-only file system"):
        bb.containers.run("bb:run", ["touch", "/x"], remove=True, read_only=True)
    assert bb.containers.run("bb:run", ["cat", "/proc/keys"], remove=True) == b""
    with pytest.raises(ContainerError):
        bb.containers.run(
            "bb:run", ["sh", "-c", "echo 1 > /proc/sys/kernel/domainname"], remove=True
        )


def test_writes_go_to_the_container_not_the_image(bb: Client) -> None:
    bb.containers.run(
        "bb:run", ["sh", "-c", "echo changed > /bin/busybox-note; rm /bin/ls"], name="writer"
    )
    img = bb.images.get("bb:run")
    layer = bb.store.layer_diff(img.record.diff_ids[0])
    assert (layer / "bin" / "ls").is_symlink() or (layer / "bin" / "ls").exists()
    assert not (layer / "bin" / "busybox-note").exists()
    upper = bb.containers.get("writer").dir / "upper"
    assert (upper / "bin" / "busybox-note").read_text() == "changed\n"
    assert bb.containers.run("bb:run", ["ls", "/bin/ls"], remove=True) == b"/bin/ls\n"


def test_image_in_use_and_prune(bb: Client) -> None:
    bb.containers.run("bb:run", ["true"], name="keeper")
    with pytest.raises(ImageInUse):
        bb.images.remove("bb:run")
    assert [c.name for c in bb.containers.list(all=True)] == ["keeper"]
    assert bb.containers.list() == []
    bb.system.prune(all=True)
    assert [(c.name, c.status) for c in bb.containers.list(all=True)] == []
    assert bb.images.list() == []
    assert bb.system.check() == []


def test_cli_exit_codes(pyrun: PyrunRunner, busybox_tar: Path) -> None:
    assert pyrun("import", str(busybox_tar), "bb:cli").returncode == 0
    res = pyrun("run", "--rm", "bb:cli", "sh", "-c", "exit 42")
    assert res.returncode == 42
    res = pyrun("run", "--rm", "bb:cli", "no-such-command")
    assert res.returncode == 127 and "executable file not found" in res.stderr
    res = pyrun("run", "--rm", "bb:cli", "/etc/passwd")
    assert res.returncode == 126
    res = pyrun("run", "--rm", "nosuch:image", "true")
    assert res.returncode == 125 and "No such image" in res.stderr
    res = pyrun("run", "--rm", "--cap-add", "BOGUS", "bb:cli", "true")
    assert res.returncode == 125 and "BOGUS" in res.stderr
    assert "Traceback" not in res.stderr
    res = pyrun("run", "--name", "named", "-e", "A=1", "bb:cli", "sh", "-c", "echo $A")
    assert res.returncode == 0 and res.stdout == "1\n"
    assert "named" in pyrun("ps", "-a").stdout
    assert pyrun("ps", "-q").stdout == ""
    res = pyrun("run", "--name", "named", "bb:cli", "true")
    assert res.returncode == 125 and "already in use" in res.stderr
    info = json.loads(pyrun("inspect", "named").stdout)
    state = info[0]["State"]
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False)
    assert state["Running"] is False and state["Pid"] == 0 and state["Error"] == ""
    assert state["StartedAt"] <= state["FinishedAt"]
    assert pyrun("rm", "named").returncode == 0
    assert pyrun("ps", "-aq").stdout == ""


def test_kill_9_of_the_cli_leaves_a_removable_container(
    store_root: Path, busybox_tar: Path, pyrun: PyrunRunner
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    assert pyrun("import", str(busybox_tar), "bb:k").returncode == 0
    cmd = [
        sys.executable,
        "-m",
        "pyrun.cli",
        "--root",
        str(store_root),
        "run",
        "--name",
        "victim",
        "bb:k",
        "sleep",
        "60",
    ]
    proc = subprocess.Popen(cmd)
    client = Client(store_root)
    for _ in range(200):
        pid_file = next(iter(Store(store_root).run_root.glob("*/pid")), None)
        if pid_file is not None and pid_file.read_text().strip():
            break
        time.sleep(0.05)
    assert pid_file is not None, "the container never started"
    container_pid = int(pid_file.read_text())
    assert client.containers.get("victim").status == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):  # the container dies with its parent (PR_SET_PDEATHSIG)
        try:
            os.kill(container_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the container outlived the killed pyrun process")
    victim = client.containers.get("victim")
    assert os.path.ismount(victim.rootfs)  # left mounted by the killed process ...
    assert victim.status == "exited"  # ... until the first reader recovers the container
    assert not os.path.ismount(victim.rootfs)
    assert victim.attrs["State"]["ExitCode"] == 137
    assert pyrun("rm", "victim").returncode == 0
    assert not victim.dir.exists() and not victim.run_dir.exists()
    assert client.system.check() == []


def test_api_runs_again_from_its_template(bb: Client, store_root: Path) -> None:
    """A foreground run a template can express is replayed in Rust the next time the same call
    comes (pyrun.client._TEMPLATES); what it read changing sends it back to Python."""

    import pyrun.client as api
    from pyrun import _core

    replays: list[object] = []
    real = _core.replay_run

    def counting(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        replays.append(out)
        return out

    call: dict[str, Any] = {"remove": True, "network_mode": "none", "environment": {"X": "1"}}
    cmd = ["sh", "-c", "echo $X $(hostname)"]
    first = bb.containers.run("bb:run", cmd, **call)
    assert any(root == str(store_root) for root, _ in api._TEMPLATES)
    try:
        _core.replay_run = counting
        outs = [Client(store_root).containers.run("bb:run", cmd, **call) for _ in range(3)]
        assert len(replays) == 3 and all(r is not None for r in replays)
        # Same output but each container's own hostname.
        assert len({first, *outs}) == 4 and all(o.startswith(b"1 ") for o in outs)
        with pytest.raises(ContainerError) as info:  # a failing command, replayed too
            for _ in range(2):
                bb.containers.run("bb:run", ["sh", "-c", "echo bad >&2; exit 4"], **call)
        assert info.value.exit_status == 4 and b"bad" in info.value.stderr
        assert "bb:run" in str(info.value)
        bb.images.get("bb:run").tag("bb:again")  # refs.json changes
        n = len(replays)
        bb.containers.run("bb:run", cmd, **call)
        assert replays[n:] == [None]  # the old template declined; Python ran it
    finally:
        _core.replay_run = real
    _core.wait_removals()  # the replays' deletions, off the caller's path
    assert bb.containers.list(all=True) == []
    assert list((store_root / "tmp").iterdir()) == []
    assert list((store_root / "tmp").iterdir()) == []


def _dumpable() -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE


def test_starts_from_threads_share_memory_safely(bb: Client) -> None:
    """The runtime sets a new container up in a child that shares the caller's memory (CLONE_VM)
    and runs on a stack of its own: several threads starting containers at once each get their
    own output and exit status, and the caller's dumpable flag (which the child clears in the
    memory it shares) is back once the last child has exec'd."""
    import threading

    assert _dumpable() == 1
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        try:
            cmd = ["sh", "-c", f"echo {i}; exit {i % 3}"]
            results[i] = bb.containers.run("bb:run", cmd, remove=True, network_mode="none")
        except ContainerError as e:
            results[i] = e.exit_status

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: (f"{i}\n".encode() if i % 3 == 0 else i % 3) for i in range(8)}
    assert _dumpable() == 1
    # What the child became is set up as before: Docker's capabilities.
    out = bb.containers.run("bb:run", ["cat", "/proc/self/status"], remove=True)
    assert cap(out, "CapEff") == "00000000a80425fb"
    assert _dumpable() == 1


def test_replayed_removals_finish_before_the_interpreter_exits(
    bb: Client, store_root: Path
) -> None:
    """A replayed --rm container is deleted off the caller's path (a Rust thread, no Python
    thread started), and the interpreter finishes those deletions before it exits."""
    import subprocess
    import sys

    script = f"""
import threading
from pyrun.client import Client
c = Client({str(store_root)!r})
for _ in range(12):
    c.containers.run("bb:run", ["true"], remove=True, network_mode="none")
print(threading.active_count())
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"  # only the main thread in Python's view
    assert list((store_root / "tmp").iterdir()) == []
    assert list((store_root / "containers").iterdir()) == []
