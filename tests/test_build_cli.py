"""`pyrun build`'s inputs and outputs: `-f -`, a context tar (or a bare Dockerfile) on stdin,
`-o type=oci|docker,dest=`, `--iidfile`, `--label`, `--secret`, `--platform`, `--pull`,
`--progress` (plain lines, the live view on a terminal, quiet) and `builder prune`."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root, needs_tool
from pyrun.client import Client

pytestmark = needs_root


@pytest.fixture
def ctx(tmp_path: Path, client: Client, busybox_tar: Path) -> Path:
    client.images.import_image(busybox_tar, "bb:cli", changes=['CMD ["sh"]'])
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "hello.txt").write_text("hello\n")
    (d / "Dockerfile").write_text("FROM bb:cli\nCOPY hello.txt /\nRUN echo ran > /ran\n")
    return d


def cli(store: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pyrun.cli", "--root", str(store), *args],
        input=stdin,
        capture_output=True,
        timeout=300,
    )


def test_dockerfile_and_context_from_stdin(ctx: Path, store_root: Path, client: Client) -> None:
    r = cli(store_root, "build", "-t", "a:1", "-f", "-", str(ctx),
            stdin=b"FROM bb:cli\nCOPY hello.txt /from-stdin\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert client.containers.run("a:1", ["cat", "/from-stdin"], remove=True) == b"hello\n"
    # A tar of the context on stdin (with -f naming the Dockerfile inside it).
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(ctx / "hello.txt", "hello.txt")
        tf.add(ctx / "Dockerfile", "build/Dockerfile.x")
    r = cli(store_root, "build", "-q", "-t", "b:1", "-f", "build/Dockerfile.x", "-",
            stdin=buf.getvalue())  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == client.images.get("b:1").id
    assert client.containers.run("b:1", ["cat", "/hello.txt", "/ran"], remove=True) == (
        b"hello\nran\n"
    )
    # A bare Dockerfile on stdin: an empty context.
    r = cli(store_root, "build", "-t", "c:1", "-", stdin=b"FROM bb:cli\nRUN echo x > /x\n")
    assert r.returncode == 0, r.stderr
    r = cli(store_root, "build", "-f", "-", "-", stdin=b"FROM bb:cli\n")
    assert r.returncode == 125 and b"cannot both come from stdin" in r.stderr


def test_outputs_iidfile_labels(ctx: Path, store_root: Path, tmp_path: Path) -> None:
    oci = tmp_path / "img.oci.tar"
    iid = tmp_path / "iid"
    r = cli(store_root, "build", "-t", "out:1", "--label", "a=b", "--iidfile", str(iid),
            "-o", f"type=oci,dest={oci}", str(ctx))  # fmt: skip
    assert r.returncode == 0, r.stderr
    with tarfile.open(oci) as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    image_id = iid.read_text()
    assert image_id.startswith("sha256:")
    cfg = Client(store_root).images.get("out:1")
    assert cfg.id == image_id and cfg.attrs["Config"]["Labels"] == {"a": "b"}
    # type=docker to stdout: the progress goes to stderr, stdout is a docker save tar.
    r = cli(store_root, "build", "-t", "out:2", "-o", "type=docker,dest=-", str(ctx))
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["out:2"] and b"CACHED" in r.stderr
    for bad, msg in [
        (["-o", "type=tar"], "type=oci|docker,dest=FILE"),
        (["--platform", "linux/s390x"], "builds linux/"),
        (["--label", "=x"], "invalid --label"),
        (["--secret", "src=/x"], "invalid --secret"),
    ]:
        r = cli(store_root, "build", *bad, str(ctx))
        assert r.returncode != 0 and msg.encode() in r.stderr, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_secret_from_file_and_env(ctx: Path, store_root: Path, tmp_path: Path) -> None:
    (tmp_path / "s").write_text("file-secret")
    (ctx / "Dockerfile").write_text(
        "FROM bb:cli\nRUN --mount=type=secret,id=f --mount=type=secret,id=e,env=E "
        'test "$(cat /run/secrets/f)$E" = file-secretenv-secret\n'
    )
    env = {**os.environ, "MYSECRET": "env-secret"}
    r = subprocess.run(
        [sys.executable, "-m", "pyrun.cli", "--root", str(store_root), "build",
         "--secret", f"id=f,src={tmp_path / 's'}", "--secret", "id=e,env=MYSECRET", str(ctx)],
        capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_progress_modes(ctx: Path, store_root: Path) -> None:
    (ctx / "Dockerfile").write_text("FROM bb:cli\nRUN echo one; sleep 0.3; echo two\n")
    plain = cli(store_root, "build", "--no-cache", "--progress", "plain", str(ctx)).stdout
    lines = plain.decode().splitlines()
    assert lines[2] == "#2 [stage-0 2/2] RUN echo one; sleep 0.3; echo two"
    assert lines[3].startswith("#2 0.") and lines[3].endswith(" one")
    assert lines[5].startswith("#2 DONE 0.")
    # On a terminal: the live view (cursor movements, a clock, finished steps with times).
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-m", "pyrun.cli", "--root",
                                  str(store_root), "build", "--no-cache", str(ctx)])  # fmt: skip
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    text = out.decode(errors="replace")
    assert "[+] Building" in text and "\x1b[" in text and " => [stage-0 2/2] RUN" in text
    assert "Finished in" in text
    quiet = cli(store_root, "build", "-q", str(ctx))
    assert quiet.stdout.decode().count("\n") == 1


def test_failing_run_shows_last_lines(ctx: Path, pyrun: PyrunRunner) -> None:
    (ctx / "Dockerfile").write_text(
        "FROM bb:cli\nRUN echo compiling; echo 'error: bad' >&2; exit 2\n"
    )
    for mode in ("plain", "quiet"):
        args = ["-q"] if mode == "quiet" else []
        r = pyrun("build", *args, "-t", "bad:1", str(ctx))
        assert r.returncode == 1
        assert "compiling" in r.stdout and "error: bad" in r.stdout, r.stdout
        assert r.stderr.strip() == (
            "Error: Dockerfile:2: RUN \"echo compiling; echo 'error: bad' >&2; exit 2\" did not "
            "complete successfully: exit code 2"
        )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    from test_registry import start_registry

    d = tmp_path / "registry"
    d.mkdir()
    yield from start_registry(d)


@needs_tool("docker-registry")
def test_pull_base_images(ctx: Path, registry: str, pyrun: PyrunRunner, client: Client) -> None:
    name = f"{registry}/base/bb:1"
    client.images.get("bb:cli").tag(f"{registry}/base/bb", "1")
    assert pyrun("push", name).returncode == 0
    assert pyrun("rmi", name).returncode == 0
    (ctx / "Dockerfile").write_text(f"FROM {name}\nRUN true\n")
    r = pyrun("build", str(ctx))  # a missing base image is pulled
    assert r.returncode == 0, r.stderr
    # --pull asks the registry again even though the image is here now: a new tag there wins.
    client.images.import_image(_tiny_rootfs(ctx), "tiny:1")
    client.images.get("tiny:1").tag(f"{registry}/base/bb", "1")
    assert pyrun("push", name).returncode == 0
    client.images.get("bb:cli").tag(f"{registry}/base/bb", "1")  # the local tag: old image
    r = pyrun("build", "--pull", "-q", str(ctx))
    assert r.returncode == 0, r.stderr
    assert client.images.get(name).id == client.images.get("tiny:1").id


def _tiny_rootfs(ctx: Path) -> Path:
    """A rootfs tar with busybox only (a different image than bb:cli)."""
    import shutil

    out = ctx.parent / "tiny.tar"
    with tarfile.open(out, "w") as tf:
        bb = shutil.which("busybox") or "/bin/busybox"
        tf.add(bb, "bin/busybox")
        info = tarfile.TarInfo("bin/sh")
        info.type, info.linkname = tarfile.SYMTYPE, "busybox"
        tf.addfile(info)
        info = tarfile.TarInfo("bin/true")
        info.type, info.linkname = tarfile.SYMTYPE, "busybox"
        tf.addfile(info)
    return out


def test_builder_prune(ctx: Path, pyrun: PyrunRunner, store_root: Path) -> None:
    assert pyrun("build", "-t", "kept:1", str(ctx)).returncode == 0
    (ctx / "Dockerfile").write_text("FROM bb:cli\nRUN echo other > /o\n")
    assert pyrun("build", str(ctx)).returncode == 0  # untagged: its step is dangling cache
    r = pyrun("builder", "prune", "-f")
    assert r.returncode == 0 and "Deleted build cache objects: 1" in r.stdout, r.stdout
    r = pyrun("builder", "prune", "-a")
    assert "Deleted build cache objects: 2" in r.stdout, r.stdout  # the tagged image's steps
    assert not list((store_root / "build-cache").glob("*.json"))


def test_builder_prune_removes_dead_builders_run_dirs(ctx: Path, pyrun: PyrunRunner,
                                                      store_root: Path) -> None:  # fmt: skip
    """A builder killed during a RUN leaves its step's container directory: prune takes it."""
    import signal
    import time

    (ctx / "Dockerfile").write_text("FROM bb:cli\nRUN sleep 30\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyrun.cli", "--root", str(store_root), "build", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list((store_root / "containers").glob("*/build.pid")):
            assert time.monotonic() < deadline, "the RUN did not start"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert len(list((store_root / "containers").glob("*/build.pid"))) == 1
    assert pyrun("ps", "-a", "-q").stdout == ""  # not a container to the container commands
    assert pyrun("builder", "prune").returncode == 0
    assert list((store_root / "containers").glob("*/build.pid")) == []
