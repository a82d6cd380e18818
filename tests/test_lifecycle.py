"""Detached containers and their lifecycle: `run -d` under a `pyrun-runtime monitor` that
outlives the CLI, logs, exec, stop/kill/wait/start/restart, restart policies, --rm, recovery
after a monitor is killed -9, and the Python API's Container objects."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from helpers import PyrunRunner, mounts_under, needs_root, super_options, until
from pyrun.client import Client
from pyrun.runtime.containers import ContainerNotRunning
from pyrun.store import Store

pytestmark = needs_root

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:life")
    return client


def cgroup_dirs(cid: str) -> list[str]:
    root = Path("/sys/fs/cgroup")
    found = [str(p) for p in root.glob(f"*/pyrun/{cid}")]
    found += [
        str(p) for p in (root / "pyrun" / cid, root / "unified" / "pyrun" / cid) if p.exists()
    ]
    return found


def test_detached_run_logs_outlive_the_cli(
    bb: Client, pyrun: PyrunRunner, store_root: Path
) -> None:
    r = pyrun(
        "run", "-d", "--name", "talker", "-m", "64m", "bb:life",
        "sh", "-c", "echo out1; echo err1 >&2; echo out2; sleep 100",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    c = bb.containers.get("talker")
    assert c.status == "running"
    # Two pipes: the order across streams is not defined (as in Docker), within one it is.
    until(lambda: sorted(c.logs().splitlines()) == [b"err1", b"out1", b"out2"])
    # The CLI that started it is gone; another reads the logs, split by stream.
    r = pyrun("logs", "talker")
    assert r.stdout == "out1\nout2\n" and r.stderr == "err1\n"
    r = pyrun("logs", "--tail", "1", "-t", "talker")
    assert len((r.stdout + r.stderr).splitlines()) == 1
    r = pyrun("logs", "-t", "talker")
    assert re.fullmatch(r"(\d{4}-\d\d-\d\dT[\d:.]+Z out\d\n){2}", r.stdout), r.stdout
    assert pyrun("logs", "--since", "1h", "talker").stdout == "out1\nout2\n"
    assert pyrun("logs", "--until", "2000-01-01T00:00:00Z", "talker").stdout == ""
    ps = pyrun("ps")
    assert "talker" in ps.stdout and "Up " in ps.stdout
    assert cgroup_dirs(cid), "a container with -m has a cgroup"
    assert mounts_under(Store(store_root).run_root / cid)

    # sh as pid 1 ignores SIGTERM: stop waits the timeout, then SIGKILL (Docker's 137).
    t0 = time.monotonic()
    r = pyrun("stop", "-t", "1", "talker")
    assert r.returncode == 0 and r.stdout == "talker\n", r.stderr
    assert 0.9 < time.monotonic() - t0 < 8
    c.reload()
    assert c.status == "exited"
    assert c.attrs["State"]["ExitCode"] == 137 and not c.attrs["State"]["Running"]
    assert "Exited (137)" in pyrun("ps", "-a").stdout
    assert pyrun("logs", "talker").stdout == "out1\nout2\n"  # logs stay after the exit
    assert pyrun("rm", "talker").returncode == 0
    assert not mounts_under(Store(store_root).run_root / cid)
    assert not cgroup_dirs(cid)


def test_exec_joins_the_container(bb: Client, pyrun: PyrunRunner) -> None:
    c = bb.containers.run("bb:life", ["sleep", "100"], detach=True, name="host", hostname="boxy")
    r = pyrun("exec", "host", "sh", "-c", "echo $$; hostname; ps -o pid,comm | grep -c sleep")
    assert r.returncode == 0, r.stderr
    pid, host, sleepers = r.stdout.split()
    assert int(pid) > 1 and host == "boxy" and sleepers == "1"
    r = pyrun("exec", "-e", "GREETING=hi", "-w", "/tmp", "-u", "nobody", "host",
              "sh", "-c", "echo $GREETING; pwd; id -un")  # fmt: skip
    assert r.stdout.split() == ["hi", "/tmp", "nobody"], r.stderr
    status = c.exec_run(["cat", "/proc/self/status"]).output.decode()
    assert re.search(rf"^CapEff:\s*{DOCKER_DEFAULT_CAPS}$", status, re.M)
    assert re.search(r"^Seccomp:\s*2$", status, re.M)
    # The default seccomp filter applies to exec too: unshare is refused.
    res = c.exec_run(["unshare", "-u", "true"])
    assert res.exit_code != 0 and b"Operation not permitted" in res.output
    # Exit codes: the process's own, 127 not found, 126 not executable.
    assert pyrun("exec", "host", "sh", "-c", "exit 7").returncode == 7
    r = pyrun("exec", "host", "no-such-command")
    assert r.returncode == 127 and "executable file not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert pyrun("exec", "host", "/etc/passwd").returncode == 126
    c.kill()
    assert c.wait()["StatusCode"] == 137
    r = pyrun("exec", "host", "true")
    assert r.returncode == 1 and "is not running" in r.stderr
    with pytest.raises(ContainerNotRunning):
        c.exec_run("true")


def test_restart_policies(bb: Client, pyrun: PyrunRunner) -> None:
    r = pyrun("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "bb:life",
              "sh", "-c", "echo try; exit 3")  # fmt: skip
    assert r.returncode == 0, r.stderr
    c = bb.containers.get("flaky")
    assert pyrun("wait", "flaky").stdout == "3\n"
    assert c.attrs["RestartCount"] == 2
    assert c.logs() == b"try\n" * 3
    assert c.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}

    # always: comes back after exiting on its own, but not after a stop.
    c = bb.containers.run(
        "bb:life",
        ["sh", "-c", "echo up; sleep 0.2"],
        detach=True,
        restart_policy={"Name": "always"},
    )
    until(lambda: c.reload() or c.attrs["RestartCount"] >= 2)
    c.stop(timeout=1)
    count = c.attrs["RestartCount"]
    time.sleep(0.5)
    c.reload()
    assert c.status == "exited" and c.attrs["RestartCount"] == count
    # A successful exit is not a failure: on-failure leaves it down.
    ok = bb.containers.run("bb:life", ["true"], detach=True, restart_policy="on-failure")
    assert ok.wait()["StatusCode"] == 0 and ok.attrs["RestartCount"] == 0


def _root_options(store_root: Path, cid: str) -> list[str]:
    return super_options(Store(store_root).run_root / cid / "rootfs")


def test_rm_detached_removes_itself(bb: Client, pyrun: PyrunRunner, store_root: Path) -> None:
    r = pyrun("run", "--rm", "-d", "bb:life", "sh", "-c", "sleep 1")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    # Its upper goes with it, so it is never synced; a container that stays is durable.
    assert "fsync=volatile" in _root_options(store_root, cid)
    kept = pyrun("run", "-d", "bb:life", "sleep", "1").stdout.strip()
    assert "fsync=volatile" not in _root_options(store_root, kept)
    assert pyrun("rm", "-f", kept).returncode == 0
    until(lambda: not (store_root / "containers" / cid).exists())
    assert not (Store(store_root).run_root / cid).exists()
    assert pyrun("ps", "-a", "-q").stdout == ""
    assert not mounts_under(Store(store_root).run_root / cid)
    r = pyrun("run", "--rm", "--restart", "always", "bb:life", "true")
    assert r.returncode == 125 and "--restart and --rm" in r.stderr


def test_monitor_killed_is_recovered(bb: Client, pyrun: PyrunRunner, store_root: Path) -> None:
    c = bb.containers.run("bb:life", ["sleep", "100"], detach=True, mem_limit="32m")
    state = json.loads((c.dir / "state.json").read_text())
    monitor, pid = state["monitor_pid"], state["pid"]
    os.kill(monitor, signal.SIGKILL)
    until(
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
        )
    )
    r = pyrun("ps", "-a")
    assert r.returncode == 0 and "Exited (137)" in r.stdout, r.stdout + r.stderr
    c.reload()
    assert "monitor died" in c.attrs["State"]["Error"]
    assert not mounts_under(c.run_dir)
    assert not cgroup_dirs(c.id)
    # The container starts again from its recovered state.
    assert pyrun("start", c.id[:12]).returncode == 0
    c.reload()
    assert c.status == "running"
    assert pyrun("rm", "-f", c.id).returncode == 0


def test_create_start_attach_wait_kill(bb: Client, pyrun: PyrunRunner) -> None:
    r = pyrun(
        "create",
        "--name",
        "later",
        "--label",
        "tier=test",
        "bb:life",
        "sh",
        "-c",
        "echo hello; exit 5",
    )
    assert r.returncode == 0, r.stderr
    c = bb.containers.get("later")
    assert c.status == "created" and c.labels == {"tier": "test"}
    assert "Created" in pyrun("ps", "-a").stdout
    r = pyrun("start", "-a", "later")
    assert r.returncode == 5 and r.stdout == "hello\n"
    # A second start of the exited container runs it again, keeping its files.
    assert pyrun("start", "later").returncode == 0
    assert pyrun("wait", "later").stdout == "5\n"
    assert c.logs() == b"hello\nhello\n"

    # --stop-signal: the container's own choice of signal reaches its process.
    r = pyrun("run", "-d", "--name", "trapper", "--stop-signal", "USR1", "bb:life",
              "sh", "-c", "trap 'echo got usr1; exit 0' USR1; while :; do sleep 0.05; done")  # fmt: skip
    assert r.returncode == 0, r.stderr
    until(lambda: bb.containers.get("trapper").status == "running")
    time.sleep(0.2)
    assert pyrun("stop", "trapper").returncode == 0
    t = bb.containers.get("trapper")
    assert t.attrs["State"]["ExitCode"] == 0 and t.logs() == b"got usr1\n"
    # kill -s sends that signal; restart brings it back up.
    assert pyrun("restart", "trapper").returncode == 0
    t.reload()
    assert t.status == "running"
    assert pyrun("kill", "-s", "KILL", "trapper").returncode == 0
    assert t.wait()["StatusCode"] == 137


def test_bad_input_one_line_each(bb: Client, pyrun: PyrunRunner) -> None:
    cases = [
        (("run", "-d", "--restart", "sometimes", "bb:life", "true"), 125, "invalid restart policy"),
        (("run", "-d", "--restart", "always:3", "bb:life", "true"), 125, "maximum retry count"),
        (("run", "-d", "--stop-signal", "SIGNOPE", "bb:life", "true"), 125, "invalid signal"),
        (("run", "-d", "nosuchimage:1", "true"), 125, "nosuchimage"),
        (("run", "-d", "bb:life", "no-such-cmd"), 127, "executable file not found"),
        (("run", "-d", "bb:life", "/etc"), 126, "permission denied"),
        (("logs", "ghost"), 1, "No such container: ghost"),
        (("stop", "ghost"), 1, "No such container: ghost"),
        (("kill", "-s", "BOGUS", "ghost"), 125, "invalid signal"),
        (("logs", "--since", "yesterday", "ghost"), 1, "No such container"),
        (("exec", "ghost"), 125, "requires at least 2 arguments"),
    ]
    for args, code, text in cases:
        r = pyrun(*args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert text in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
    # A failed detached start leaves a created container with the error recorded.
    failed = [c for c in bb.containers.list(all=True) if c.record["command"] == ["no-such-cmd"]]
    assert len(failed) == 1 and failed[0].status == "created"
    assert "executable file not found" in failed[0].attrs["State"]["Error"]
    c = bb.containers.run("bb:life", ["true"], detach=True)
    c.wait()
    r = pyrun("logs", "--since", "yesterday", c.id)
    assert r.returncode == 1 and "invalid time" in r.stderr


def test_monitor_is_small(bb: Client) -> None:
    """Each detached container costs one native monitor: no Python, under 1 MB of private
    dirty memory (conmon's budget)."""
    c = bb.containers.run("bb:life", ["sleep", "100"], detach=True)
    monitor = json.loads((c.dir / "state.json").read_text())["monitor_pid"]
    exe = os.readlink(f"/proc/{monitor}/exe")
    assert exe.endswith("pyrun-runtime"), exe
    rollup = Path(f"/proc/{monitor}/smaps_rollup").read_text()
    dirty = int(re.search(r"^Private_Dirty:\s+(\d+) kB", rollup, re.M).group(1))  # type: ignore[union-attr]
    assert dirty < 1024, rollup
    c.remove(force=True)
    with pytest.raises(Exception, match="No such container"):
        bb.containers.get(c.id)


def test_init_reaps_and_forwards(bb: Client, pyrun: PyrunRunner) -> None:
    # pid 1 is the reaper; the command is its child; orphans are reaped (no zombie left).
    out = bb.containers.run(
        "bb:life",
        ["sh", "-c", "echo $$; (sleep 0.1 &); sleep 0.4; ps -o pid,stat,comm"],
        remove=True,
        init=True,
    ).decode()
    lines = out.splitlines()
    assert lines[0] != "1"
    assert not any(" Z " in line for line in lines[2:]), out
    assert re.match(r"\s*1 ", lines[2]), out
    # Exit codes pass through, and a missing command is still 127 in one line.
    assert pyrun("run", "--rm", "--init", "bb:life", "sh", "-c", "exit 9").returncode == 9
    r = pyrun("run", "--rm", "--init", "bb:life", "no-such-command")
    assert r.returncode == 127 and len(r.stderr.strip().splitlines()) == 1
    # Signals reach the command (sleep as pid 1 would ignore SIGTERM): 128 + 15.
    r = pyrun("run", "-d", "--init", "--name", "reaped", "bb:life", "sleep", "100")
    assert r.returncode == 0, r.stderr
    c = bb.containers.get("reaped")
    assert c.attrs["HostConfig"]["Init"] is True
    t0 = time.monotonic()
    assert pyrun("stop", "reaped").returncode == 0
    assert time.monotonic() - t0 < 5
    c.reload()
    state = c.attrs["State"]
    assert state["ExitCode"] == 143
    assert "0001" not in state["StartedAt"] and state["StartedAt"] <= state["FinishedAt"]


def test_ps_filters_and_formats(bb: Client, pyrun: PyrunRunner) -> None:
    web = bb.containers.run(
        "bb:life", ["sleep", "100"], detach=True, name="web", labels={"tier": "web"}
    )
    pyrun("run", "--name", "failed", "bb:life", "sh", "-c", "exit 3")
    pyrun("run", "--name", "fine", "bb:life", "true")
    assert pyrun("ps", "--format", "{{.Names}}").stdout == "web\n"
    assert (
        pyrun("ps", "-f", "label=tier=web", "--format", "{{.Names}} {{.State}}").stdout
        == "web running\n"
    )
    assert pyrun("ps", "-f", "label=tier=db", "-q").stdout == ""
    assert pyrun("ps", "-f", "exited=3", "--format", "{{.Names}}").stdout == "failed\n"
    names = pyrun("ps", "-f", "status=exited", "--format", "{{.Names}}").stdout.split()
    assert sorted(names) == ["failed", "fine"]
    assert pyrun("ps", "-a", "-f", "name=^f", "-f", "id=" + web.id[:6], "-q").stdout == ""
    assert pyrun("ps", "-a", "-f", "ancestor=bb:life", "-q").stdout.count("\n") == 3
    assert pyrun("ps", "-l", "--format", "{{.Names}}").stdout == "fine\n"
    assert pyrun("ps", "-a", "-f", "since=web", "--format", "{{.Names}}").stdout.split() == [
        "fine",
        "failed",
    ]
    rows = [json.loads(line) for line in pyrun("ps", "-a", "--format", "json").stdout.splitlines()]
    assert {r["Names"] for r in rows} == {"web", "failed", "fine"}
    assert next(r for r in rows if r["Names"] == "web")["Labels"] == "tier=web"
    table = pyrun("ps", "--format", "table {{.ID}}\\t{{.Names}}").stdout.splitlines()
    assert table == ["CONTAINER ID\tNAMES", f"{web.id[:12]}\tweb"]
    for bad in ("bogus=1", "status=sleepy", "exited=x", "noequals"):
        r = pyrun("ps", "-f", bad)
        assert r.returncode == 125 and "invalid filter" in r.stderr, (bad, r.stderr)
    r = pyrun("ps", "--format", "{{.Nope}}")
    assert r.returncode == 125 and "no field 'Nope'" in r.stderr


def test_docker_py_exception_shape(bb: Client) -> None:
    from pyrun import errors
    from pyrun.client import ContainerError

    with pytest.raises(errors.NotFound):
        bb.containers.get("ghost")
    with pytest.raises(errors.NotFound):
        bb.images.get("ghost:1")
    with pytest.raises(errors.APIError) as e:
        bb.containers.run("bb:life", ["sh", "-c", "exit 3"], remove=True)
    assert isinstance(e.value, ContainerError) and e.value.exit_status == 3
    assert issubclass(errors.ImageNotFound, errors.NotFound)
    assert issubclass(errors.APIError, errors.DockerException)


def test_foreground_run_is_logged_too(bb: Client, pyrun: PyrunRunner) -> None:
    """`docker logs` shows an attached container's output: the foreground run tees it."""
    r = pyrun(
        "run", "--name", "attached", "bb:life", "sh", "-c", "echo out; echo err >&2; printf tail"
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "out\ntail", "err\n")
    r = pyrun("logs", "attached")
    assert (r.stdout, r.stderr) == ("out\ntail", "err\n")
    # API: the same through stdio fds.
    assert bb.containers.run("bb:life", ["echo", "api"], name="api-run") == b"api\n"
    assert bb.containers.get("api-run").logs() == b"api\n"


def test_pause_unpause_and_commit_pause(bb: Client, pyrun: PyrunRunner) -> None:
    script = "i=0; while :; do i=$((i+1)); echo $i > /count; sleep 0.05; done"
    assert pyrun("run", "-d", "--name", "ticker", "bb:life", "sh", "-c", script).returncode == 0
    c = bb.containers.get("ticker")
    until(lambda: pyrun("exec", "ticker", "cat", "/count").stdout.strip() not in ("", "1"))
    r = pyrun("pause", "ticker")
    assert (r.returncode, r.stdout) == (0, "ticker\n")
    assert c.paused and c.attrs["State"]["Status"] == "paused" and c.attrs["State"]["Paused"]
    assert "(Paused)" in pyrun("ps").stdout
    assert pyrun("ps", "-q", "-f", "status=paused").stdout.strip() == c.short_id
    ps = json.loads(pyrun("ps", "--format", "json").stdout.splitlines()[0])
    assert ps["State"] == "paused"
    # Frozen: the counter in the container's file does not move.
    count = (c.dir / "upper" / "count").read_text()
    time.sleep(0.3)
    assert (c.dir / "upper" / "count").read_text() == count
    r = pyrun("exec", "ticker", "true")
    assert r.returncode == 1 and "is paused, unpause the container before exec" in r.stderr
    r = pyrun("pause", "ticker")
    assert r.returncode == 1 and "already paused" in r.stderr
    # Committing a paused container leaves it paused.
    assert pyrun("commit", "ticker", "ticked:1").returncode == 0
    assert c.paused
    assert pyrun("unpause", "ticker").stdout == "ticker\n"
    assert not c.paused and c.attrs["State"]["Status"] == "running"
    r = pyrun("unpause", "ticker")
    assert r.returncode == 1 and "is not paused" in r.stderr
    until(lambda: (c.dir / "upper" / "count").read_text() != count)
    # commit pauses a running container by default and thaws it afterwards; --pause=false not.
    assert pyrun("commit", "ticker", "ticked:2").returncode == 0
    assert not c.paused
    assert pyrun("commit", "--pause=false", "ticker", "ticked:3").returncode == 0
    r = pyrun("commit", "--pause=maybe", "ticker", "ticked:4")
    assert r.returncode == 125 and "--pause" in r.stderr
    # The API, and stop of a paused container (thawed to act on SIGTERM, then killed).
    c.pause()
    assert c.paused
    t0 = time.monotonic()
    c.stop(timeout=1)
    assert time.monotonic() - t0 < 5
    assert c.status == "exited" and not c.paused
    with pytest.raises(ContainerNotRunning):
        c.pause()
    assert pyrun("unpause", "nope").returncode == 1
