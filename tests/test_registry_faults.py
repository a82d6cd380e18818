"""Ship, the failure cases: a blob whose bytes do not match its digest, the registry stopped in
the middle of a pull, one clear line for each registry error, eight pulls of the same image at
once, the Debian registry's quirks, and interop with the Docker engine both ways."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_docker, needs_root, needs_tool
from pyrun.client import Client
from test_registry import FaultyProxy, free_port

pytestmark = [needs_root, needs_tool("docker-registry")]


class RegistryProcess:
    """docker-registry on a fixed port and data directory that the test can stop and start."""

    def __init__(self, root: Path, auth: str = "") -> None:
        self.root = root
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        root.mkdir(exist_ok=True)
        (root / "config.yml").write_text(
            "version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {root}/data}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {self.addr}}}\n" + auth
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.root / "log", "ab") as log:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.root / "config.yml")],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.025)
        pytest.fail(f"docker-registry did not listen: {(self.root / 'log').read_text()}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[RegistryProcess]:
    r = RegistryProcess(tmp_path / "registry")
    yield r
    r.kill()


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:ship", changes=['CMD ["echo", "shipped"]'])
    return client


def cli(root: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyrun.cli", "--root", str(root), *args],
        capture_output=True, text=True, timeout=300, **kw,  # type: ignore[call-overload]
    )  # fmt: skip


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip()


def big_image(bb: Client, name: str, mib: int = 32) -> None:
    """bb plus a layer of `mib` MiB of random bytes (incompressible: the blob is that big)."""
    c = bb.containers.run(
        "bb:ship", ["sh", "-c", f"head -c {mib << 20} /dev/urandom > /big"], detach=True
    )
    c.wait()
    repo, _, tag = name.rpartition(":")
    c.commit(repo, tag)
    c.remove()


def test_corrupt_blob_fails_cleanly_and_the_next_pull_succeeds(
    bb: Client, reg: RegistryProcess, tmp_path: Path
) -> None:
    name = f"{reg.addr}/corrupt/bb:1"
    bb.images.get("bb:ship").tag(f"{reg.addr}/corrupt/bb", "1")
    bb.images.push(name)
    rec = bb.images.get(name).record
    blob = reg.blob_file(rec.layers[0]["digest"])
    good = blob.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # same size, other bytes
    blob.write_bytes(bytes(bad))

    root = tmp_path / "fresh"
    msg = one_line(cli(root, "pull", name))
    assert "mismatch" in msg and rec.layers[0]["digest"] in msg, msg
    fresh = Client(root)
    assert fresh.images.list() == []
    assert not fresh.store.has_layer(rec.diff_ids[0]) and not fresh.store.has_blob(
        rec.layers[0]["digest"]
    )
    assert list((root / "partial").glob("*")) == [] if (root / "partial").exists() else True
    assert [p for p in (root / "tmp").iterdir()] == []
    assert fresh.system.check() == []

    # Into an OCI layout or archive: the same one line, and no blob with other bytes in it.
    layout = tmp_path / "layout"
    msg = one_line(cli(root, "image", "copy", "-q", f"docker://{name}", f"oci:{layout}:1"))
    assert "mismatch" in msg and rec.layers[0]["digest"] in msg, msg
    assert not (layout / "blobs" / "sha256" / rec.layers[0]["digest"][7:]).exists()
    assert not (layout / "index.json").exists()
    msg = one_line(
        cli(root, "image", "copy", "-q", f"docker://{name}", f"oci-archive:{layout}.tar")
    )
    assert "mismatch" in msg and not Path(f"{layout}.tar").exists(), msg

    blob.write_bytes(good)  # the registry repaired: the next pull succeeds
    r = cli(root, "pull", "-q", name)
    assert r.returncode == 0, r.stderr
    assert fresh.containers.run(name, remove=True) == b"shipped\n"
    assert fresh.system.check() == []


class StallProxy(FaultyProxy):
    """Forwards until a response has passed `stall_after` bytes, then holds it (sets
    `stalled`) until `release` is set; then forwards what is left and closes."""

    def __init__(self, upstream: str, stall_after: int, reset: bool = False) -> None:
        self.stall_after = stall_after
        self.reset = reset  # on release, reset the connection (RST) instead of going on
        self.stalled = threading.Event()
        self.release = threading.Event()
        super().__init__(upstream)

    def _serve(self, client: socket.socket) -> None:
        host, port = self.upstream.split(":")
        try:
            up = socket.create_connection((host, int(port)))
        except OSError:
            client.close()
            return

        resetting = threading.Event()

        def down() -> None:
            sent = 0
            try:
                while data := up.recv(65536):
                    client.sendall(data)
                    sent += len(data)
                    if self.stall_after and sent > self.stall_after:
                        self.stall_after = 0
                        self.stalled.set()
                        self.release.wait(60)
                        if self.reset:  # linger 0: the close below sends an RST, no FIN
                            linger = struct.pack("ii", 1, 0)
                            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                            resetting.set()
                            client.shutdown(socket.SHUT_RD)  # wakes the reader, which closes
                            return
            except OSError:
                pass
            finally:  # shutdown first: the other thread's recv keeps the socket open
                if not resetting.is_set():
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RDWR)
                    client.close()

        threading.Thread(target=down, daemon=True).start()
        try:
            while data := client.recv(65536):
                with self.lock:
                    self.requests.append(data.split(b"\r\n\r\n", 1)[0].decode(errors="replace"))
                up.sendall(data)
        except OSError:
            pass
        finally:
            up.close()
            if resetting.is_set():
                client.close()


def test_registry_stopped_mid_pull_then_the_next_pull_resumes(
    bb: Client, reg: RegistryProcess, tmp_path: Path
) -> None:
    name = f"{reg.addr}/stop/big:1"
    big_image(bb, name)
    bb.images.push(name)
    rec = bb.images.get(name).record
    big = max(rec.layers, key=lambda d: int(d["size"]))
    proxy = StallProxy(reg.addr, stall_after=4 << 20)
    root = tmp_path / "fresh"
    try:
        via = f"{proxy.addr}/stop/big:1"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyrun.cli", "--root", str(root), "pull", "-q", via],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proxy.stalled.wait(60), proxy.requests
        reg.kill()  # the registry goes away in the middle of the blob
        proxy.release.set()
        out, err = proc.communicate(timeout=120)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        msg = one_line(r)
        # (Which layer's failure is told depends on timing: the big one was cut, a smaller
        # one may not have started when the registry went.)
        assert "closed after" in msg or "broke after" in msg, msg
        assert "pull again to resume" in msg, msg
        assert Client(root).system.check() == []
        partial = root / "partial" / big["digest"].replace(":", "-")
        kept = partial.stat().st_size
        assert 0 < kept < int(big["size"])

        # While it is down: one line naming the failure.
        assert "connection refused" in one_line(cli(root, "pull", name)).lower()

        reg.start()
        r = cli(root, "pull", "-q", via)
        assert r.returncode == 0, r.stderr
        ranges = [q for q in proxy.requests if "range: bytes=" in q.lower()]
        assert any(f"bytes={kept}-" in q for q in ranges), proxy.requests
        fresh = Client(root)
        assert fresh.images.get(via).record.diff_ids == rec.diff_ids
        assert fresh.system.check() == []
        assert not partial.exists()
    finally:
        proxy.release.set()
        proxy.close()


def test_connection_reset_mid_blob_is_retried_from_where_it_broke(
    bb: Client, reg: RegistryProcess, tmp_path: Path
) -> None:
    """A reset in the middle of a blob: the pull goes on after a pause with a Range request
    from the byte where it broke (the layer is not downloaded twice), and succeeds."""
    name = f"{reg.addr}/reset/big:1"
    big_image(bb, name, mib=8)
    bb.images.push(name)
    proxy = StallProxy(reg.addr, stall_after=4 << 20, reset=True)
    root = tmp_path / "fresh"
    try:
        proxy.release.set()
        r = cli(root, "pull", "-q", f"{proxy.addr}/reset/big:1")  # the proxy resets once
        assert r.returncode == 0, r.stderr
        ranges = [q for q in proxy.requests if "range: bytes=" in q.lower()]
        assert len(ranges) == 1, proxy.requests
        start = int(ranges[0].lower().split("range: bytes=")[1].split("-")[0])
        assert 0 < start < 8 << 20, ranges  # (what the RST dropped from buffers comes again)
        fresh = Client(root)
        assert fresh.system.check() == []
        assert fresh.images.get(f"{proxy.addr}/reset/big:1").record.diff_ids == (
            bb.images.get(name).record.diff_ids
        )
    finally:
        proxy.close()


def test_eight_concurrent_pulls_leave_one_copy(
    bb: Client, reg: RegistryProcess, tmp_path: Path
) -> None:
    name = f"{reg.addr}/many/big:1"
    big_image(bb, name, mib=8)
    bb.images.push(name)
    rec = bb.images.get(name).record
    root = tmp_path / "fresh"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pyrun.cli", "--root", str(root), "pull", "-q", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    fresh = Client(root)
    (img,) = fresh.images.list()
    assert img.record.manifest_digest == rec.manifest_digest and img.tags == [name]
    layers = sorted(p.name for p in (root / "layers" / "sha256").iterdir())
    assert layers == sorted(d.split(":")[1] for d in rec.diff_ids)
    blobs = {p.name for p in (root / "blobs" / "sha256").iterdir()}
    assert {d["digest"].split(":")[1] for d in rec.layers} <= blobs
    assert [p for p in (root / "tmp").iterdir()] == []
    assert fresh.system.check() == []
    assert fresh.containers.run(name, ["sh", "-c", "wc -c < /big"], remove=True) == b"8388608\n"


def test_registry_errors_are_one_clear_line(
    bb: Client, reg: RegistryProcess, tmp_path: Path, pyrun: PyrunRunner
) -> None:
    # Invalid names never reach the registry (Debian's 2.8 answers an over-long one with a 500,
    # not NAME_INVALID): the reference grammar refuses them first.
    name = f"{reg.addr}/errs/bb:1"
    bb.images.get("bb:ship").tag(f"{reg.addr}/errs/bb", "1")
    bb.images.push(name)
    missing = "sha256:" + "0" * 64
    for args, texts in [
        (("pull", f"{reg.addr}/errs/bb:nope"), ["MANIFEST_UNKNOWN", "errs/bb"]),
        (("pull", f"{reg.addr}/errs/bb@{missing}"), ["HTTP 404", missing]),
        (("pull", f"{reg.addr}/no/such:1"), ["HTTP 404", "no/such"]),
        (("pull", f"{reg.addr}/Bad/Name:1"), ["invalid reference"]),
        (("pull", f"{reg.addr}/" + "a" * 300 + ":1"), ["invalid reference", "255"]),
        (("manifest", "inspect", f"{reg.addr}/errs/bb:nope"), ["MANIFEST_UNKNOWN"]),
    ]:
        msg = one_line(pyrun(*args))
        assert all(t.lower() in msg.lower() for t in texts), (args, msg)


def test_unauthorized_is_one_clear_line(bb: Client, tmp_path: Path, pyrun: PyrunRunner) -> None:
    d = tmp_path / "basic"
    reg = RegistryProcess(d, f"auth: {{htpasswd: {{realm: basic-realm, path: {d}/htpasswd}}}}\n")
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "nocfg")}
    try:
        msg = one_line(cli(tmp_path / "fresh", "pull", f"{reg.addr}/priv/bb:1", env=env))
        assert "authentication required" in msg and reg.addr in msg, msg
        cfg = tmp_path / "badcfg"
        cfg.mkdir()
        (cfg / "config.json").write_text(
            json.dumps({"auths": {reg.addr: {"auth": "ZG9ja2VyOng="}}})
        )
        env["DOCKER_CONFIG"] = str(cfg)
        msg = one_line(cli(tmp_path / "fresh", "pull", f"{reg.addr}/priv/bb:1", env=env))
        assert "HTTP 401" in msg and "UNAUTHORIZED" in msg, msg
    finally:
        reg.kill()


def sh(*args: str) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


@needs_docker
def test_docker_engine_interop_both_ways(bb: Client, reg: RegistryProcess, tmp_path: Path) -> None:
    """What pyrun pushes, `docker pull` fetches and `docker run` runs; what `docker push`
    pushes (an image put into Docker with `docker load` of `pyrun save`), pyrun pulls and runs."""
    pushed = f"{reg.addr}/dock/pyrun-pushed:1"
    from_docker = f"{reg.addr}/dock/docker-pushed:1"
    loaded = "pyrun-ship-interop/bb:1"
    try:
        bb.images.get("bb:ship").tag(f"{reg.addr}/dock/pyrun-pushed", "1")
        digest = bb.images.push(pushed)
        out = sh("docker", "pull", pushed)
        assert digest in out, out
        assert sh("docker", "run", "--rm", "--network", "none", pushed) == "shipped\n"

        bb.images.get("bb:ship").tag("pyrun-ship-interop/bb", "1")
        archive = tmp_path / "bb.tar"
        bb.images.save([loaded], archive)
        sh("docker", "load", "-i", str(archive))
        sh("docker", "tag", loaded, from_docker)
        sh("docker", "push", from_docker)
        fresh = Client(tmp_path / "fresh")
        img = fresh.images.pull(from_docker)
        assert img.record.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        assert img.record.diff_ids == bb.images.get("bb:ship").record.diff_ids
        assert fresh.containers.run(from_docker, remove=True) == b"shipped\n"
        assert fresh.system.check() == []
    finally:
        subprocess.run(["docker", "rmi", "-f", pushed, from_docker, loaded], capture_output=True)
