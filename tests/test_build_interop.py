"""Docker interop: the same Dockerfile and context built by `docker build` (the engine on this
machine; its classic builder, as there is no buildx here) and by `pyrun build` give the same file tree and the same config (Env, Cmd,
Entrypoint, WorkingDir, User, ExposedPorts, Labels); a pyrun image runs under `docker run`
after `pyrun save | docker load`. Both start from the same busybox image, loaded into Docker
from pyrun (no registry outside this machine)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import PyrunRunner, needs_docker, needs_root
from pyrun.client import Client

pytestmark = [needs_root, needs_docker]

BASE = "pyrun-interop/bb:1"
DOCKERFILE = f"""\
ARG BASE={BASE}
FROM ${{BASE}} AS build
ARG FLAVOUR=plain
WORKDIR /src
COPY app/ ./app/
RUN mkdir -p /out && for f in app/*.txt; do tr a-z A-Z < "$f" > "/out/$(basename $f)"; done \\
    && echo "$FLAVOUR" > /out/flavour && ln -s flavour /out/link && chmod 0750 /out/flavour

FROM ${{BASE}}
ENV APP_HOME=/srv/app PATH=/srv/app/bin:$PATH
COPY --from=build /out/ $APP_HOME/data/
COPY --chown=1000:1000 conf/settings.ini /etc/app/
COPY bin/run.sh $APP_HOME/bin/
COPY alias.txt linkdir /etc/app/links/
COPY --chown=nobody:nogroup app/b.txt /etc/app/nobody.txt
ADD pkg.tar.gz /opt/
ADD pkg.tar.gz /opt/copy.tar.gz
RUN mkdir -p /var/lib/app && chown 1000:1000 /var/lib/app && rm /etc/group
# (After the RUN: the classic builder mounts volumes in RUN steps and commits their mount
# points, BuildKit does not.)
VOLUME /var/lib/app/data
WORKDIR $APP_HOME
USER 1000:1000
EXPOSE 8080 9090/udp
LABEL org.example.name="interop" org.example.version=1
ENTRYPOINT ["run.sh"]
CMD ["--serve"]
"""


@pytest.fixture
def context(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    for rel, text, mode in [
        ("app/a.txt", "alpha\n", 0o644),
        ("app/b.txt", "beta\n", 0o600),
        ("conf/settings.ini", "[app]\nkey=value\n", 0o640),
        ("bin/run.sh", '#!/bin/sh\necho "run $* as $(id -u) in $(pwd)"; cat data/a.txt\n', 0o755),
        ("ignored.log", "not copied\n", 0o644),
    ]:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
    (d / "alias.txt").symlink_to("app/a.txt")  # a source that is a link: followed
    (d / "linkdir").symlink_to("app")
    (d / "app" / "inner-link").symlink_to("b.txt")  # a link inside a directory: kept
    import tarfile

    with tarfile.open(d / "pkg.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("pkg/bin/tool")
        info.size, info.mode, info.uid, info.gid = 5, 0o751, 7, 8
        tf.addfile(info, io.BytesIO(b"tool\n"))
        info = tarfile.TarInfo("pkg/share")
        info.type, info.mode = tarfile.DIRTYPE, 0o700
        tf.addfile(info)
    (d / "Dockerfile").write_text(DOCKERFILE)
    return d


def docker(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    return subprocess.run(["docker", *args], capture_output=True, env=env, timeout=300, **kw)


@pytest.fixture
def base_in_both(client: Client, busybox_tar: Path, pyrun: PyrunRunner,
                 tmp_path: Path) -> Iterator[Path]:  # fmt: skip
    """The base image in pyrun and in Docker; yields its archive (to load it again)."""
    # An image ID of its own: other users of this engine (the benchmark) load the same busybox
    # and remove it by ID when done.
    client.images.import_image(busybox_tar, BASE, changes=['CMD ["sh"]', "LABEL interop=1"])
    tar = tmp_path / "base.tar"
    assert pyrun("save", "-o", str(tar), BASE).returncode == 0
    r = docker("load", "-i", str(tar))
    assert r.returncode == 0, r.stderr
    yield tar
    docker("rmi", "-f", BASE)


def flatten(archive: bytes) -> dict[str, tuple[Any, ...]]:
    """The file tree of a `docker save` archive: path -> (type, mode, uid, gid, content)."""
    tree: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            data = outer.extractfile(layer).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                members = tf.getmembers()
                for m in members:  # opaque directories first, then whiteouts, then entries
                    name = m.name.lstrip("./").rstrip("/")
                    base = os.path.basename(name)
                    parent = os.path.dirname(name)
                    if base == ".wh..wh..opq":
                        for k in [k for k in tree if k.startswith(parent + "/")]:
                            del tree[k]
                for m in members:
                    name = m.name.lstrip("./").rstrip("/")
                    base = os.path.basename(name)
                    parent = os.path.dirname(name)
                    if base == ".wh..wh..opq":
                        continue
                    if base.startswith(".wh."):
                        gone = os.path.join(parent, base[4:])
                        for k in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                            del tree[k]
                        continue
                    if not name:
                        continue
                    content: Any = None
                    if m.isfile():
                        content = hashlib.sha256(tf.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                    elif m.issym() or m.islnk():
                        content = m.linkname
                    tree[name] = (m.type, m.mode & 0o7777, m.uid, m.gid, content)
    return tree


CONFIG_FIELDS = (
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
)  # fmt: skip


def test_same_tree_and_config_as_docker_build(
    base_in_both: Path, context: Path, pyrun: PyrunRunner, client: Client, tmp_path: Path
) -> None:
    tag = "pyrun-interop/app:docker"
    for _ in range(4):  # other users of this engine may prune images under our feet
        docker("load", "-i", str(base_in_both))
        r = docker("build", "--no-cache", "-q", "-t", tag, str(context))
        if r.returncode == 0:
            break
    assert r.returncode == 0, r.stderr
    try:
        theirs = docker("save", tag)
        assert theirs.returncode == 0
        their_cfg = json.loads(docker("image", "inspect", tag).stdout)[0]["Config"]
    finally:
        docker("rmi", "-f", tag)
    r = pyrun("build", "-q", "-t", "pyrun-interop/app:pyrun", str(context))
    assert r.returncode == 0, r.stderr
    ours_tar = tmp_path / "ours.tar"
    assert pyrun("save", "-o", str(ours_tar), "pyrun-interop/app:pyrun").returncode == 0
    ours = flatten(ours_tar.read_bytes())
    expected = flatten(theirs.stdout)
    assert {k: v for k, v in ours.items() if k not in expected} == {}
    assert {k: v for k, v in expected.items() if k not in ours} == {}
    assert {k: (ours[k], v) for k, v in expected.items() if ours[k] != v} == {}
    our_cfg = client.images.get("pyrun-interop/app:pyrun").attrs["Config"]
    assert {f: our_cfg.get(f) for f in CONFIG_FIELDS} == {
        f: their_cfg.get(f) for f in CONFIG_FIELDS
    }
    assert their_cfg["Labels"]["interop"] == "1"


def test_pyrun_image_runs_under_docker(
    base_in_both: Path, context: Path, pyrun: PyrunRunner, store_root: Path
) -> None:
    tag = "pyrun-interop/app:ran"
    assert pyrun("build", "-q", "-t", tag, str(context)).returncode == 0
    save = subprocess.Popen(
        [sys.executable, "-m", "pyrun.cli", "--root", str(store_root), "save", tag],
        stdout=subprocess.PIPE,
    )
    try:
        load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True,
                              timeout=120)  # fmt: skip
        assert save.wait(60) == 0 and load.returncode == 0, load.stderr
        out = docker("run", "--rm", "--network", "none", tag)
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().splitlines() == ["run --serve as 1000 in /srv/app", "ALPHA"]
    finally:
        docker("rmi", "-f", tag)
        if save.stdout is not None:
            save.stdout.close()
