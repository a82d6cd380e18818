"""`pyrun build`: multi-stage builds on the busybox image (RUN as containers, COPY from the
context and from stages), the config instructions, ARG/--build-arg, the cache rules (an mtime
keeps it, a changed byte invalidates from that step, an unselected file does not),
.dockerignore, one-line errors with file:line, and the result running under Docker. The rest
of the language is in test_build_language.py, the CLI's inputs and outputs in
test_build_cli.py, Docker interop in test_build_interop.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_docker, needs_root
from pyrun.client import Client

pytestmark = needs_root

MULTI = """\
# syntax=docker/dockerfile:1
ARG BASE=bb:build
FROM ${BASE} AS builder
ARG FLAVOUR=plain
WORKDIR /src
COPY app.txt ./
RUN echo "built $FLAVOUR from $(cat app.txt)" > out.txt && \\
    # comments inside a continued instruction are dropped
    mkdir -p /opt/x && echo extra > /opt/x/extra.txt

FROM bb:build
COPY --from=builder /src/out.txt /srv/out.txt
COPY --from=builder /opt/x/ /opt/copied/
COPY --chown=1000:1000 --chmod=0640 conf/ /etc/app/
COPY --chown=nobody app.txt /home/app.txt
ENV GREETING=hello TARGET=/srv
ENV FULL=${GREETING}-world
WORKDIR $TARGET
USER 1000
LABEL org.example.version="1.0" org.example.name=demo
EXPOSE 8080 53/udp
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat out.txt; echo $FULL; pwd; id -u"]
"""


@pytest.fixture
def ctx(tmp_path: Path, client: Client, busybox_tar: Path) -> Path:
    client.images.import_image(busybox_tar, "bb:build", changes=['CMD ["sh"]'])
    d = tmp_path / "ctx"
    (d / "conf").mkdir(parents=True)
    (d / "Dockerfile").write_text(MULTI)
    (d / "app.txt").write_text("the app\n")
    (d / "conf" / "app.conf").write_text("key=value\n")
    (d / "unused.txt").write_text("not selected by any COPY\n")
    return d


def test_multi_stage_build_and_config(ctx: Path, pyrun: PyrunRunner, client: Client) -> None:
    r = pyrun("build", "-t", "demo:1", "--build-arg", "FLAVOUR=fancy", str(ctx))
    assert r.returncode == 0, r.stdout + r.stderr
    out = client.containers.run("demo:1", remove=True).decode().split("\n")
    assert out[:4] == ["built fancy from the app", "hello-world", "/srv", "1000"]
    cfg = client.images.get("demo:1").attrs["Config"]
    assert cfg["WorkingDir"] == "/srv" and cfg["User"] == "1000"
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Labels"] == {"org.example.version": "1.0", "org.example.name": "demo"}
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert cfg["StopSignal"] == "SIGINT"
    assert "GREETING=hello" in cfg["Env"] and "FULL=hello-world" in cfg["Env"]
    listing = client.containers.run(
        "demo:1", ["ls -ln /etc/app/app.conf /opt/copied/extra.txt"], remove=True
    ).decode()
    assert "-rw-r-----    1 1000     1000" in listing and "/opt/copied/extra.txt" in listing
    owner = client.containers.run("demo:1", ["stat -c %u:%g /home/app.txt"], remove=True)
    assert owner == b"65534:65534\n"  # a name alone: its uid, and gid = uid (Docker's rule)
    history = client.images.get("demo:1").history()
    assert len(history) >= 10
    assert client.system.check() == []


def _steps(out: str) -> dict[str, str]:
    """Plain progress: step title -> CACHED | DONE | ERROR."""
    titles: dict[str, str] = {}
    result: dict[str, str] = {}
    for line in out.splitlines():
        num, _, rest = line.partition(" ")
        if rest.startswith("["):
            titles[num] = rest
        elif num in titles and rest.split(" ")[0] in ("CACHED", "DONE", "ERROR"):
            result[titles[num]] = rest.split(" ")[0]
    return result


def test_cache_rules(ctx: Path, pyrun: PyrunRunner, client: Client) -> None:
    first = pyrun("build", "-q", str(ctx))
    assert first.returncode == 0, first.stderr
    image = first.stdout.strip()
    # No change: every step cached, the very same image.
    again = _steps(pyrun("build", str(ctx)).stdout)
    assert [t for t, r in again.items() if r != "CACHED"] == [
        t for t in again if " 1/" in t
    ]  # all but the FROMs
    assert pyrun("build", "-q", str(ctx)).stdout.strip() == image
    # An mtime alone, or a file no COPY selects: still the same image.
    (ctx / "app.txt").touch()
    (ctx / "unused.txt").write_text("changed, but nobody copies it\n")
    assert pyrun("build", "-q", str(ctx)).stdout.strip() == image
    # One byte of a selected file: from that COPY on, rebuilt.
    (ctx / "app.txt").write_text("the app!\n")
    steps = _steps(pyrun("build", str(ctx)).stdout)
    builder = [r for t, r in steps.items() if t.startswith("[builder")]
    assert builder == ["DONE", "CACHED", "CACHED", "DONE", "DONE"], steps  # COPY redone
    final = [r for t, r in steps.items() if t.startswith("[stage-1")]
    assert final[1:] == ["DONE"] * (len(final) - 1), steps  # linear: all after a miss
    assert pyrun("build", "-q", str(ctx)).stdout.strip() != image
    # --no-cache rebuilds everything.
    assert "CACHED" not in pyrun("build", "--no-cache", str(ctx)).stdout


def test_dockerignore_and_target(ctx: Path, pyrun: PyrunRunner, client: Client) -> None:
    (ctx / ".dockerignore").write_text("conf/*.secret\n")
    (ctx / "conf" / "db.secret").write_text("hunter2\n")
    assert pyrun("build", "-t", "ign:1", str(ctx)).returncode == 0
    files = client.containers.run("ign:1", ["ls /etc/app"], remove=True).decode().split()
    assert files == ["app.conf"]
    r = pyrun("build", "-t", "stage1:1", "--target", "builder", str(ctx))
    assert r.returncode == 0, r.stderr
    assert client.containers.run("stage1:1", ["cat", "/src/out.txt"], remove=True) == (
        b"built plain from the app\n"
    )


@pytest.mark.parametrize(
    ("dockerfile", "text"),
    [
        (
            "FROM bb:build\nRUNN echo hi\n",
            "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)",
        ),
        ("RUN true\n", "Dockerfile:1: RUN before the first FROM"),
        (
            "FROM bb:build\nCOPY missing.txt /x\n",
            "Dockerfile:2: COPY failed: file not found in build context: missing.txt",
        ),
        (
            "FROM bb:build\nRUN exit 3\n",
            "Dockerfile:2: RUN 'exit 3' did not complete successfully: exit code 3",
        ),
        ("FROM bb:build\nCOPY --from=nowhere:1 /a /b\n", "no such stage"),
        ("FROM bb:build\nRUN <<EOF\necho\n", "Dockerfile:2: unterminated heredoc EOF"),
        ("FROM bb:build\nRUN --mont=type=cache echo\n", "(did you mean mount?)"),
        ("FROM bb:build\nENV A=${B\n", "Dockerfile:2: missing '}'"),
        ("FROM bb:build AS a\nCOPY --from=b /x /x\nFROM bb:build AS b\n", "earlier one"),
        ("FROM bb:build\nCOPY --chmod=999 Dockerfile /x\n", "invalid chmod parameter"),
        (
            "FROM bb:build\nCOPY --chown=nosuchuser Dockerfile /x\n",
            "--chown=nosuchuser: unable to find user nosuchuser",
        ),
    ],
)
def test_bad_dockerfiles_one_line(
    ctx: Path, pyrun: PyrunRunner, client: Client, dockerfile: str, text: str
) -> None:
    (ctx / "Dockerfile").write_text(dockerfile)
    r = pyrun("build", "-t", "broken:1", str(ctx))
    assert r.returncode != 0 and text in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "broken:1" not in pyrun("images").stdout  # nothing tagged
    r = pyrun("build", "--target", "nope", str(ctx))
    assert r.returncode != 0


@needs_docker
def test_built_image_runs_under_docker(ctx: Path, pyrun: PyrunRunner, tmp_path: Path) -> None:
    assert pyrun("build", "-t", "pyrun-test/built:1", str(ctx)).returncode == 0
    tar = tmp_path / "built.tar"
    assert pyrun("save", "-o", str(tar), "pyrun-test/built:1").returncode == 0
    try:
        subprocess.run(["docker", "load", "-i", str(tar)], check=True, capture_output=True)
        out = subprocess.run(["docker", "run", "--rm", "pyrun-test/built:1"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert out.stdout.splitlines()[:2] == ["built plain from the app", "hello-world"]
        info = json.loads(subprocess.run(["docker", "image", "inspect", "pyrun-test/built:1"],
                                         capture_output=True, check=True).stdout)  # fmt: skip
        assert info[0]["Config"]["WorkingDir"] == "/srv"
    finally:
        subprocess.run(["docker", "rmi", "-f", "pyrun-test/built:1"], capture_output=True)


def test_python_api_build(ctx: Path, client: Client) -> None:
    image, logs = client.images.build(str(ctx), tag="api:1", buildargs={"FLAVOUR": "api"})
    assert image.tags == ["api:1"]
    assert any("RUN" in entry["stream"] for entry in logs)
    assert client.containers.run("api:1", remove=True).startswith(b"built api from the app\n")
    again, logs = client.images.build(str(ctx), tag="api:1", buildargs={"FLAVOUR": "api"})
    assert again.id == image.id and sum("CACHED" in e["stream"] for e in logs) >= 10
    # A Dockerfile given as an object; a failing RUN raises with its last lines.
    from pyrun.build.builder import BuildError

    with pytest.raises(BuildError, match="exit code 4") as err:
        client.images.build(str(ctx), fileobj="FROM bb:build\nRUN echo oops; exit 4\n")
    assert err.value.tail == ["oops"]


def test_source_date_epoch_reproducible(ctx: Path, pyrun: PyrunRunner) -> None:
    """Two builds from scratch (no cache) with SOURCE_DATE_EPOCH give the same image."""
    args = ["build", "-q", "--no-cache", "--build-arg", "SOURCE_DATE_EPOCH=1700000000", str(ctx)]
    first = pyrun(*args)
    assert first.returncode == 0, first.stderr
    second = pyrun(*args)
    assert second.stdout == first.stdout
    assert pyrun("build", "-q", "--no-cache", str(ctx)).stdout != first.stdout
