"""pyrun-runtime under the engines that drive runc: the Docker engine of this machine with
pyrun registered as an extra runtime (daemon.json `runtimes`, reloaded with SIGHUP and put
back afterwards), and a containerd of the test's own (own root, state and socket, so Docker's
is not disturbed) running containers through the runc v2 shim with pyrun as its binary, and
accepting pyrun as a Kubernetes RuntimeClass handler in its CRI configuration."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import needs_docker, needs_root, needs_tool
from ocibundle import pyrun_runtime, unpack_rootfs

pytestmark = needs_root

DAEMON_JSON = Path("/etc/docker/daemon.json")


def sh(*args: str, timeout: float = 120) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr}"
    return r.stdout


def dockerd_pid() -> int:
    for pidfile in ("/var/run/docker.pid", "/run/docker.pid"):
        with contextlib.suppress(OSError, ValueError):
            return int(Path(pidfile).read_text())
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    if not out:
        pytest.skip("cannot find dockerd's pid to reload its configuration")
    return int(out[0])


def reload_docker(want_pyrun: bool) -> None:
    """SIGHUP dockerd (what `systemctl reload docker` does) and wait for its runtimes. A
    reload adds runtimes but does not forget one (until dockerd restarts): after the file is
    put back, only wait for the daemon to answer."""
    os.kill(dockerd_pid(), signal.SIGHUP)
    deadline = time.monotonic() + 20
    while True:
        runtimes = json.loads(sh("docker", "info", "--format", "{{json .Runtimes}}"))
        if not want_pyrun or "pyrun" in runtimes:
            return
        assert time.monotonic() < deadline, f"dockerd did not reload: {runtimes}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def docker_pyrun() -> Iterator[str]:
    """Docker with `--runtime pyrun` registered; daemon.json is restored afterwards."""
    original = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
    cfg = json.loads(original or b"{}")
    cfg.setdefault("runtimes", {})["pyrun"] = {"path": pyrun_runtime()}
    tmp = DAEMON_JSON.with_name(".daemon.json.pyrun-test")
    try:
        DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(cfg, indent=2))
        tmp.replace(DAEMON_JSON)
        reload_docker(True)
        yield "pyrun"
    finally:
        if original is None:
            DAEMON_JSON.unlink(missing_ok=True)
        else:
            tmp.write_bytes(original)
            tmp.replace(DAEMON_JSON)
        reload_docker(False)


@pytest.fixture(scope="module")
def docker_busybox(busybox_tar: Path) -> Iterator[str]:
    name = "pyrun-runc-test/busybox:1"
    sh("docker", "import", str(busybox_tar), name)
    yield name
    subprocess.run(["docker", "rmi", "-f", name], capture_output=True)


@needs_docker
def test_docker_run_rm_with_pyrun(docker_pyrun: str, docker_busybox: str) -> None:
    # The default bridge network: Docker sets it up from a prestart hook pyrun runs.
    out = sh("docker", "run", "--rm", "--runtime", docker_pyrun, docker_busybox, "echo", "hi")
    assert out == "hi\n"
    r = subprocess.run(
        ["docker", "run", "--rm", "--runtime", docker_pyrun, docker_busybox, "sh", "-c", "exit 3"],
        capture_output=True,
    )
    assert r.returncode == 3
    out = sh("docker", "run", "--rm", "--runtime", docker_pyrun, docker_busybox, "ip", "-4", "addr")
    assert "eth0" in out and "inet 172." in out
    # -t: the pty master reaches containerd's shim through the console socket.
    out = sh("docker", "run", "--rm", "-t", "--runtime", docker_pyrun, docker_busybox, "tty")
    assert out.strip() == "/dev/pts/0"
    r = subprocess.run(
        ["docker", "run", "--rm", "--runtime", docker_pyrun, docker_busybox, "nope"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 127 and "executable file not found" in r.stderr


@needs_docker
def test_docker_detached_logs_exec_stop(docker_pyrun: str, docker_busybox: str) -> None:
    name = "pyrun-runc-detached"
    script = 'echo started; trap "echo stopping; exit 0" TERM; while :; do sleep 0.1; done'
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    try:
        sh(
            "docker", "run", "-d", "--name", name, "--runtime", docker_pyrun,
            "--network", "none", docker_busybox, "sh", "-c", script,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while "started" not in sh("docker", "logs", name):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert sh("docker", "exec", name, "sh", "-c", "echo in-$(hostname)").startswith("in-")
        r = subprocess.run(["docker", "exec", name, "sh", "-c", "exit 4"], capture_output=True)
        assert r.returncode == 4
        assert sh("docker", "exec", "-t", name, "tty").strip() == "/dev/pts/0"
        sh("docker", "pause", name)
        assert sh("docker", "inspect", "-f", "{{.State.Status}}", name).strip() == "paused"
        sh("docker", "unpause", name)
        sh("docker", "update", "--memory", "64m", "--memory-swap", "128m", name)
        stats = sh("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", name)
        assert "64MiB" in stats
        t0 = time.monotonic()
        sh("docker", "stop", name)
        assert time.monotonic() - t0 < 8  # stopped by SIGTERM, not the 10 s SIGKILL
        assert sh("docker", "logs", name) == "started\nstopping\n"
        assert sh("docker", "inspect", "-f", "{{.State.ExitCode}}", name).strip() == "0"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


class Containerd:
    """A containerd of the test's own: its own root, state, sockets and runc root."""

    def __init__(self, base: Path, config_extra: str = "") -> None:
        self.base = base
        self.sock = base / "containerd.sock"
        cfg = base / "config.toml"
        cfg.write_text(
            f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
            f'[grpc]\n  address = "{self.sock}"\n'
            f'[ttrpc]\n  address = "{base}/containerd-ttrpc.sock"\n'
            '[debug]\n  address = ""\n[metrics]\n  address = ""\n' + config_extra
        )
        self.config = cfg
        self.log = (base / "containerd.log").open("w")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(cfg)], stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 30
        while self.ctr_run("version").returncode != 0:
            assert self.proc.poll() is None, (base / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not come up"
            time.sleep(0.2)

    def ctr_run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.sock), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ctr(self, *args: str) -> str:
        r = self.ctr_run(*args)
        assert r.returncode == 0, f"ctr {' '.join(args)}: {r.stderr}"
        return r.stdout

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def rootfs(busybox_tar: Path, tmp_path: Path) -> Path:
    return unpack_rootfs(busybox_tar, tmp_path / "rootfs")


@needs_tool("containerd")
@needs_tool("ctr")
def test_containerd_runs_pyrun_as_its_runc(tmp_path: Path, rootfs: Path) -> None:
    base = tmp_path / "ctd"
    base.mkdir()
    extra = '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n'
    c = Containerd(base, extra)
    runc_root = str(tmp_path / "runc-root")
    binary = pyrun_runtime()
    common = ["--runc-binary", binary, "--runc-root", runc_root, "--rootfs", str(rootfs)]
    try:
        out = c.ctr("run", "--rm", *common, "fg", "sh", "-c", "echo hi from $(id -u)")
        assert out == "hi from 0\n"
        c.ctr("run", "-d", *common, "bg", "sleep", "1000")
        # The shim drove pyrun-runtime: the container is in pyrun's state root.
        state = json.loads(sh(binary, "--root", f"{runc_root}/default", "state", "bg"))
        assert state["status"] == "running"
        assert "RUNNING" in c.ctr("task", "ls")
        assert c.ctr("task", "exec", "--exec-id", "e1", "bg", "echo", "exec-ok") == "exec-ok\n"
        c.ctr("task", "pause", "bg")
        assert "PAUSED" in c.ctr("task", "ls")
        c.ctr("task", "resume", "bg")
        assert "pids.current" in c.ctr("task", "metrics", "bg")
        c.ctr("task", "kill", "-s", "KILL", "bg")
        deadline = time.monotonic() + 10
        while "STOPPED" not in c.ctr("task", "ls"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        c.ctr("task", "rm", "bg")
        c.ctr("container", "rm", "bg")
        assert sh(binary, "--root", f"{runc_root}/default", "list", "-q") == ""
    finally:
        for cid in ("fg", "bg"):
            c.ctr_run("task", "kill", "-s", "KILL", cid)
            c.ctr_run("task", "rm", "-f", cid)
            c.ctr_run("container", "rm", cid)
        c.stop()


CRI_RUNTIME = """
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni-bin"
    conf_dir = "{base}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pyrun]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.pyrun.options]
      BinaryName = "{binary}"
"""


@needs_tool("containerd")
@needs_tool("ctr")
def test_containerd_cri_accepts_pyrun_runtime_class(tmp_path: Path) -> None:
    """The configuration the README gives for a Kubernetes RuntimeClass `handler: pyrun`:
    containerd's CRI plugin loads with it (pods need a kubelet, which this machine lacks)."""
    base = tmp_path / "ctd"
    base.mkdir()
    c = Containerd(base, CRI_RUNTIME.format(base=base, binary=pyrun_runtime()))
    try:
        plugins = c.ctr("plugins", "ls")
        cri = [line for line in plugins.splitlines() if " cri " in line]
        assert cri and cri[0].split()[-1] == "ok", plugins
        dump = sh("containerd", "--config", str(c.config), "config", "dump")
        assert f'BinaryName = "{pyrun_runtime()}"' in dump
    finally:
        c.stop()
