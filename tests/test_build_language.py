"""The Dockerfile language, instruction by instruction, through the Python API on the busybox
image: heredocs, RUN mounts and networks, COPY/ADD flags and Docker's path rules, ARG scopes,
ONBUILD, HEALTHCHECK, Docker's SHELL/ENTRYPOINT/CMD table, WORKDIR/USER, parallel stages,
the context stat cache, reproducible digests and the build cache's place in GC."""

from __future__ import annotations

import http.server
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import needs_root
from pyrun.build.builder import Builder, BuildError
from pyrun.build.parser import DockerfileError
from pyrun.client import Client

pytestmark = needs_root


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> str:
    client.images.import_image(busybox_tar, "bb:lang", changes=['CMD ["sh"]'])
    return "bb:lang"


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    return d


def build(client: Client, ctx: Path, dockerfile: str, **kw: Any) -> tuple[str, list[str]]:
    """Build `dockerfile` in `ctx`; (image ID, plain progress lines)."""
    (ctx / "Dockerfile").write_text(dockerfile)
    image, logs = client.images.build(str(ctx), **kw)
    return image.id, [e["stream"].rstrip("\n") for e in logs]


def sh(client: Client, image: str, script: str, **kw: Any) -> str:
    out = client.containers.run(
        image, ["sh", "-c", script], entrypoint=[], remove=True, network="none", **kw
    )
    assert isinstance(out, bytes)
    return out.decode()


def config(client: Client, image: str) -> dict[str, Any]:
    cfg = client.images.get(image).attrs["Config"]
    assert isinstance(cfg, dict)
    return cfg


def layer_files(client: Client, image: str) -> set[str]:
    """Every path in the layers the build added (not the base image's)."""
    diffs = client.images.get(image).attrs["RootFS"]["Layers"][1:]
    out: set[str] = set()
    for d in diffs:
        top = client.store.layer_diff(d)
        out |= {str(p.relative_to(top)) for p in top.rglob("*")}
    return out


# --- heredocs ------------------------------------------------------------------------------


def test_heredocs(client: Client, bb: str, ctx: Path) -> None:
    image, _ = build(
        client,
        ctx,
        f"""FROM {bb}
ARG WHO=world
RUN <<EOF
echo "hello $WHO" > /one
echo second line >> /one
EOF
RUN <<'PY'
#!/bin/sh
echo "shebang run as $0" > /two
PY
RUN (cat; cat <&3) <<A 3<<-B > /three
a-line
A
\tb-line (tab stripped)
\tB
COPY <<EOF <<'RAW' /etc/made/
expanded: $WHO
EOF
literal: $WHO
RAW
COPY --chmod=0755 <<-EOF /usr/bin/hi
\t#!/bin/sh
\techo hi from a heredoc
\tEOF
""",
    )
    out = sh(
        client,
        image,
        "cat /one /two /three /etc/made/EOF /etc/made/RAW; hi; stat -c %a /usr/bin/hi",
    )
    assert out.splitlines() == [
        "hello world",
        "second line",
        "shebang run as /dev/pipes/PY",
        "a-line",
        "b-line (tab stripped)",
        "expanded: world",
        "literal: $WHO",
        "hi from a heredoc",
        "755",
    ]


# --- RUN -----------------------------------------------------------------------------------


def test_run_mounts(client: Client, bb: str, ctx: Path, tmp_path: Path) -> None:
    (ctx / "data").mkdir()
    (ctx / "data" / "in.txt").write_text("from the context\n")
    (ctx / ".dockerignore").write_text("data/hidden\n")
    (ctx / "data" / "hidden").write_text("ignored\n")
    dockerfile = f"""FROM {bb} AS tools
RUN mkdir /tools && echo tool > /tools/t
FROM {bb}
ARG N=1
RUN --mount=type=cache,target=/cache echo "run $N" >> /cache/log && cat /cache/log > /seen
RUN --mount=type=bind,source=data,target=/mnt ls /mnt > /bound && cat /mnt/in.txt >> /bound
RUN --mount=type=bind,from=tools,source=/tools,target=/t cat /t/t > /fromstage
RUN --mount=type=bind,target=/w,rw touch /w/scratch && test ! -e /w/scratch.keep
RUN --mount=type=tmpfs,target=/tmpfs,size=1m df /tmpfs | tail -1 | tr -s ' ' | cut -d' ' -f2 > /tmpsize
RUN --mount=type=secret,id=token cat /run/secrets/token > /dev/null && stat -c %a /run/secrets/token > /secretmode
RUN --mount=type=secret,id=token,env=TOKEN test ${{#TOKEN}} -ge 5 && echo env-ok > /secretenv
"""
    image, _ = build(client, ctx, dockerfile, secrets={"token": "s3cr3t"})
    out = sh(client, image, "cat /seen /bound /fromstage /tmpsize /secretmode /secretenv; "
                            "ls -d /cache /tmpfs /t /run/secrets /w 2>/dev/null | wc -l")  # fmt: skip
    assert out.splitlines() == [
        "run 1", "in.txt", "from the context", "tool", "1024", "400", "env-ok", "0",
    ]  # fmt: skip
    assert not (ctx / "scratch").exists()  # rw bind writes are thrown away
    # The cache mount keeps its contents across builds (and is not in the key).
    image2, _ = build(client, ctx, dockerfile.replace("ARG N=1", "ARG N=2"),
                      secrets={"token": "other"})  # fmt: skip
    assert sh(client, image2, "cat /seen").splitlines() == ["run 1", "run 2"]
    # The secret never reaches a layer or the history.
    history = json.dumps(client.images.get(image2).history())
    assert "s3cr3t" not in history and "other" not in history
    # A required secret that is missing is an error naming it.
    with pytest.raises(BuildError, match="secret absent not found"):
        build(client, ctx, f"FROM {bb}\nRUN --mount=type=secret,id=absent,required cat x\n")


def test_run_networks(client: Client, bb: str, ctx: Path) -> None:
    image, _ = build(
        client,
        ctx,
        f"""FROM {bb}
RUN ip -o link | grep -c -v ' lo:' > /default || true
RUN --network=none ip -o link | grep -c -v ' lo:' > /none || true
RUN --network=host ip -o link | wc -l > /host
RUN ip route | grep -c default > /route; ls /etc
""",
    )
    default, none, host, route = sh(client, image, "cat /default /none /host /route").split()
    assert default == "1" and none == "0" and int(host) >= 2 and route == "1"
    # The /etc files mounted for a RUN do not end up in its layers.
    assert layer_files(client, image) == {"default", "none", "host", "route"}
    with pytest.raises(DockerfileError, match="--network=bogus: default, none or host"):
        build(client, ctx, f"FROM {bb}\nRUN --network=bogus true\n")


def test_failing_run_keeps_its_last_lines(client: Client, bb: str, ctx: Path) -> None:
    with pytest.raises(BuildError) as err:
        build(client, ctx, f"FROM {bb}\nRUN seq 1 30; echo boom >&2; exit 7\n", tag="nope:1")
    assert "Dockerfile:2: RUN" in str(err.value) and "exit code 7" in str(err.value)
    assert err.value.tail == [*map(str, range(22, 31)), "boom"]
    assert "nope:1" not in [t for i in client.images.list() for t in i.tags]


# --- COPY / ADD ----------------------------------------------------------------------------


def test_copy_rules_and_flags(client: Client, bb: str, ctx: Path) -> None:
    for rel, text in {
        "a.txt": "a", "b.txt": "b", "c.md": "c", "dir/x/one.txt": "1", "dir/x/two.md": "2",
        "dir/y.txt": "y", "src/app/main.c": "m", "src/lib/util.c": "u", "src/lib/util.h": "h",
    }.items():  # fmt: skip
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(text)
    (ctx / "a.txt").chmod(0o600)
    with tarfile.open(ctx / "pkg.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("pkg/bin/tool")
        info.size, info.mode, info.uid, info.gid = 4, 0o751, 7, 8
        tf.addfile(info, io.BytesIO(b"tool"))
    image, _ = build(
        client,
        ctx,
        f"""FROM {bb}
WORKDIR /w
COPY a.txt rel.txt
COPY *.txt /glob/
COPY dir /contents
COPY dir/ /trailing
COPY a.txt /etc
COPY --chmod=u+x,go-r a.txt /sym
COPY --chown=12:34 --chmod=640 dir/y.txt /owned/
COPY --exclude=**/*.md --exclude=dir/x/one.txt dir /excl/
COPY --parents src/**/*.c /parents/
COPY --parents ./src/./lib/util.h /pivot/
COPY --link b.txt /linked/
ADD pkg.tar.gz /opt/
COPY pkg.tar.gz /notextracted/
COPY nothing* /none/
""",
    )
    out = sh(client, image, """
cat /w/rel.txt; echo; ls /glob; ls /contents /trailing; cat /etc/a.txt; echo
stat -c '%a' /sym /glob/a.txt; stat -c '%u:%g %a' /owned/y.txt
find /excl /parents /pivot -type f | sort; cat /linked/b.txt; echo
stat -c '%a %u:%g' /opt/pkg/bin/tool; ls /notextracted; ls /none 2>&1 | wc -l
""")  # fmt: skip
    assert out.split("\n") == [
        "a", "a.txt", "b.txt", "/contents:", "x", "y.txt", "", "/trailing:", "x", "y.txt",
        "a", "700", "600", "34:34 640".replace("34:34", "12:34"),
        "/excl/y.txt", "/parents/src/app/main.c", "/parents/src/lib/util.c",
        "/pivot/lib/util.h", "b", "751 7:8", "pkg.tar.gz", "1", "",
    ]  # fmt: skip


def test_copy_from_an_image_and_add_url(client: Client, bb: str, ctx: Path) -> None:
    payload = b"served over http\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/files/doc.txt"
    try:
        import hashlib

        good = "sha256:" + hashlib.sha256(payload).hexdigest()
        image, _ = build(
            client,
            ctx,
            f"""FROM scratch
COPY --from={bb} /bin/ /bin/
ADD --checksum={good} {url} /dl/
ADD {url} /named.txt
""",
        )
        out = sh(client, image, "stat -c '%a %Y' /dl/doc.txt; cat /named.txt",
                 )  # fmt: skip
        assert out.splitlines() == ["600 1445412480", "served over http"]
        with pytest.raises(BuildError, match="checksum mismatch"):
            build(client, ctx, f"FROM scratch\nADD --checksum=sha256:{'0' * 64} {url} /x\n")
    finally:
        server.shutdown()
        server.server_close()


# --- config instructions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "entrypoint", "cmd"),
    [
        # Docker's table (docs: "Understand how CMD and ENTRYPOINT interact").
        ('CMD ["c1", "c2"]', None, ["c1", "c2"]),
        ("CMD c1 c2", None, ["/bin/sh", "-c", "c1 c2"]),
        ('ENTRYPOINT ["e1"]', ["e1"], None),
        ("ENTRYPOINT e1 x", ["/bin/sh", "-c", "e1 x"], None),
        ('ENTRYPOINT ["e1"]\nCMD ["c1"]', ["e1"], ["c1"]),
        ('CMD ["c1"]\nENTRYPOINT ["e1"]', ["e1"], ["c1"]),
        ('SHELL ["/bin/ash", "-eo", "pipefail", "-c"]\nCMD c1', None,
         ["/bin/ash", "-eo", "pipefail", "-c", "c1"]),
        ('SHELL ["ls"]\nENTRYPOINT my entrypoint', ["ls", "my entrypoint"], None),
    ],
)  # fmt: skip
def test_shell_entrypoint_cmd_table(
    client: Client, bb: str, ctx: Path, lines: str, entrypoint: Any, cmd: Any
) -> None:
    # The base image has CMD ["sh"]: an ENTRYPOINT resets it, a CMD replaces it.
    image, _ = build(client, ctx, f"FROM {bb}\n{lines}\n")
    cfg = config(client, image)
    assert cfg.get("Entrypoint") == entrypoint and cfg.get("Cmd") == cmd


def test_config_instructions(client: Client, bb: str, ctx: Path) -> None:
    image, _ = build(
        client,
        ctx,
        f"""FROM {bb}
ENV A=1 B="two words"
ENV C=$A-${{B// /_}} A=changed
LABEL "com.example.x"="y" multi="a b"
EXPOSE 80 53/udp 8000-8002
VOLUME ["/data", "/logs"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=2s --start-period=1m --retries=4 CMD ["wget", "-q", "x"]
MAINTAINER someone
""",
        labels={"from.cli": "yes"},
    )
    cfg = config(client, image)
    assert "C=1-two_words" in cfg["Env"] and "A=changed" in cfg["Env"]
    assert cfg["Labels"] == {"com.example.x": "y", "multi": "a b", "from.cli": "yes"}
    assert set(cfg["ExposedPorts"]) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"}
    assert set(cfg["Volumes"]) == {"/data", "/logs"} and cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"] == {
        "Test": ["CMD", "wget", "-q", "x"], "Interval": 5 * 10**9, "Timeout": 2 * 10**9,
        "StartPeriod": 60 * 10**9, "Retries": 4,
    }  # fmt: skip
    attrs = client.images.get(image).attrs
    assert attrs["Author"] == "someone"
    history = client.images.get(image).history()
    assert all(h["Comment"] == "buildkit.dockerfile.v0" for h in history[:8])
    image2, _ = build(client, ctx, f"FROM {image}\nHEALTHCHECK NONE\n")
    assert config(client, image2)["Healthcheck"] == {"Test": ["NONE"]}


def test_workdir_and_user(client: Client, bb: str, ctx: Path) -> None:
    image, _ = build(
        client,
        ctx,
        f"""FROM {bb}
RUN echo 'app:x:1234:2345::/home/app:/bin/sh' >> /etc/passwd && \\
    echo 'app:x:2345:' >> /etc/group
WORKDIR /srv
WORKDIR sub/dir
USER app
WORKDIR /home/app/work
WORKDIR /tmp
RUN pwd > /tmp/pwd && id -u >> /tmp/pwd
""",
    )
    out = sh(client, image, "stat -c '%n %u:%g %a' /srv /srv/sub/dir /home/app/work; cat /tmp/pwd")
    assert out.splitlines() == [
        "/srv 0:0 755", "/srv/sub/dir 0:0 755", "/home/app/work 1234:2345 755", "/tmp", "1234",
    ]  # fmt: skip
    assert config(client, image)["WorkingDir"] == "/tmp" and config(client, image)["User"] == "app"


def test_args_scopes(client: Client, bb: str, ctx: Path) -> None:
    image, _ = build(
        client,
        ctx,
        f"""ARG BASE={bb}
ARG GLOBAL=g
FROM $BASE AS first
ARG GLOBAL
ARG LOCAL=l-$GLOBAL
ARG TARGETARCH
ARG TARGETSTAGE
ARG UNSET
RUN echo "$GLOBAL $LOCAL ${{UNSET-unset}} $TARGETARCH $TARGETSTAGE" > /args
RUN echo "proxy=$http_proxy" > /proxy
FROM first
RUN echo "inherited=$LOCAL" > /inherited
""",
        buildargs={"LOCAL": "cli", "http_proxy": "http://proxy:3128"},
    )
    out = sh(client, image, "cat /args /proxy /inherited").splitlines()
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    assert out == [f"g cli unset {arch} first", "proxy=http://proxy:3128", "inherited=cli"]
    # Proxy args stay out of the history.
    assert "proxy:3128" not in json.dumps(client.images.get(image).history())


def test_onbuild(client: Client, bb: str, ctx: Path) -> None:
    (ctx / "payload").write_text("p")
    parent, _ = build(
        client,
        ctx,
        f"FROM {bb}\nONBUILD COPY payload /onbuild/\nONBUILD RUN echo triggered > /t\n",
        tag="parent:1",
    )
    assert config(client, parent)["OnBuild"] == ["COPY payload /onbuild/",
                                                 "RUN echo triggered > /t"]  # fmt: skip
    child, _ = build(client, ctx, "FROM parent:1\nRUN cat /t /onbuild/payload > /both\n",
                     tag="child:1")  # fmt: skip
    assert sh(client, child, "cat /both") == "triggered\np"
    assert not config(client, child).get("OnBuild")  # not inherited by grandchildren
    with pytest.raises(DockerfileError, match="ONBUILD ONBUILD"):
        build(client, ctx, f"FROM {bb}\nONBUILD ONBUILD RUN true\n")


# --- stages, cache, reproducibility ---------------------------------------------------------


def test_parallel_stages_and_unused_ones(client: Client, bb: str, ctx: Path) -> None:
    dockerfile = f"""FROM {bb} AS one
RUN sleep 1.5; echo 1 > /one
FROM {bb} AS two
RUN sleep 1.5; echo 2 > /two
FROM {bb} AS unused
RUN exit 1
FROM {bb}
COPY --from=one /one /
COPY --from=two /two /
"""
    image, lines = build(client, ctx, dockerfile)
    assert sh(client, image, "cat /one /two").split() == ["1", "2"]
    # Both RUNs started before either ended: they ran at the same time.
    runs = [i for i, line in enumerate(lines) if "] RUN sleep 1.5" in line]
    steps = {lines[i].split()[0] for i in runs}
    ends = [i for i, line in enumerate(lines) if line.split()[:2] in ([s, "DONE"] for s in steps)]
    assert len(runs) == 2 and len(ends) == 2 and runs[1] < ends[0], lines
    assert not any("unused" in line for line in lines)  # not needed by the target: not built


def test_context_stat_cache(client: Client, bb: str, ctx: Path) -> None:
    for i in range(20):
        (ctx / f"f{i}").write_text(str(i))
    (ctx / "Dockerfile").write_text(f"FROM {bb}\nCOPY . /ctx/\n")

    def run() -> Builder:
        b = Builder(client.store, ctx, progress="quiet")
        b.build()
        return b

    assert run().context.files_read == 21  # the files and the Dockerfile
    assert run().context.files_read == 0  # nothing changed: nothing read
    (ctx / "f3").touch()
    (ctx / "f4").write_text("changed")
    assert run().context.files_read == 2


def test_reproducible_with_source_date_epoch(client: Client, bb: str, ctx: Path) -> None:
    (ctx / "f").write_text("x")
    df = f"FROM {bb}\nCOPY f /f\nRUN date > /d && touch /new\nWORKDIR /made\n"
    args = {"SOURCE_DATE_EPOCH": "1700000000"}
    one, _ = build(client, ctx, df, buildargs=args, nocache=True)
    time.sleep(1.1)
    (ctx / "f").touch()
    two, _ = build(client, ctx, df.replace("date", "echo fixed"), buildargs=args, nocache=True)
    three, _ = build(client, ctx, df.replace("date", "echo fixed"), buildargs=args, nocache=True)
    assert two == three and one != two
    created = client.images.get(two).attrs["Created"]
    assert created.startswith("2023-11-14T22:13:20")


def test_build_cache_and_gc(client: Client, bb: str, ctx: Path, pyrun: Any) -> None:
    (ctx / "f").write_text("x")
    build(client, ctx, f"FROM {bb}\nCOPY f /f\nRUN echo made > /m\n", tag="gc:1")
    client.images.remove("gc:1")
    client.images.prune()  # the image goes; its build cache keeps the layers
    _, lines = build(client, ctx, f"FROM {bb}\nCOPY f /f\nRUN echo made > /m\n", tag="gc:1")
    assert sum(line.endswith("CACHED") for line in lines) == 2
    assert client.system.check() == []
    client.images.remove("gc:1")
    r = pyrun("builder", "prune", "-a", "-f")
    assert r.returncode == 0 and "Deleted build cache objects: 2" in r.stdout, r.stdout + r.stderr
    _, lines = build(client, ctx, f"FROM {bb}\nCOPY f /f\nRUN echo made > /m\n")
    assert not any(line.endswith("CACHED") for line in lines)


def test_parallel_unpacks_of_one_layer(client: Client, tmp_path: Path) -> None:
    """Store.unpack_layer of the same blob from several threads at once: one layer, intact."""
    from pyrun import _core

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(200):
        (src / "d" / f"f{i}").write_text("x" * i)
    _core.create_layer(str(src), str(tmp_path / "l.tar.gz"))
    store = client.store.ensure()
    errors: list[BaseException] = []

    def unpack() -> None:
        try:
            store.unpack_layer(str(tmp_path / "l.tar.gz"))
        except Exception as e:
            errors.append(e)

    for _ in range(3):
        threads = [threading.Thread(target=unpack) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        layers = list((store.root / "layers" / "sha256").iterdir())
        assert len(layers) == 1 and len(list((layers[0] / "diff" / "d").iterdir())) == 200
        import shutil

        shutil.rmtree(layers[0])


@pytest.fixture
def dockerignore_ctx(ctx: Path) -> Iterator[Path]:
    for rel in ("keep.txt", "ba", "bay", "bar/x", "deep/a/b/tmp.log", "deep/keep.log",
                "node_modules/m/i.js", "node_modules/m/keep.me"):  # fmt: skip
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(rel)
    yield ctx


def test_dockerignore_patterns(client: Client, bb: str, dockerignore_ctx: Path) -> None:
    ctx = dockerignore_ctx
    (ctx / ".dockerignore").write_text(
        "\ufeff# comment\nba*\n!bay\n**/*.log\n!deep/keep.log\n/node_modules\n"
        "!node_modules/m/keep.me\n"
    )
    image, _ = build(client, ctx, f"FROM {bb}\nCOPY . /c/\n")
    files = sh(client, image, "cd /c && find . -type f | sort").split()
    assert files == ["./.dockerignore", "./Dockerfile", "./bay", "./deep/keep.log",
                     "./keep.txt", "./node_modules/m/keep.me"]  # fmt: skip
    # <Dockerfile>.dockerignore beside the Dockerfile wins over .dockerignore.
    (ctx / "Other.Dockerfile").write_text(f"FROM {bb}\nCOPY . /c/\n")
    (ctx / "Other.Dockerfile.dockerignore").write_text("*\n!keep.txt\n")
    image, _ = client.images.build(str(ctx), dockerfile="Other.Dockerfile")
    assert sh(client, image.id, "cd /c && find . -type f").split() == ["./keep.txt"]


def test_check_directive(client: Client, bb: str, ctx: Path) -> None:
    _, lines = build(client, ctx, f"FROM {bb}\nCMD echo hi\n")
    assert lines[-2:] == [
        "1 warning found:",
        " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended "
        "behavior related to OS signals (line 2)",
    ]
    _, lines = build(client, ctx, f"# check=skip=JSONArgsRecommended\nFROM {bb}\nCMD echo hi\n")
    assert not any("warning" in line for line in lines)
    with pytest.raises(DockerfileError, match=r"Dockerfile:3: JSONArgsRecommended: .*error=true"):
        build(client, ctx, f"# check=error=true\nFROM {bb}\nCMD echo hi\n", tag="strict:1")


def test_links_in_images_stay_inside_them(client: Client, bb: str, ctx: Path,
                                          tmp_path: Path) -> None:  # fmt: skip
    """Absolute links in a stage or image resolve inside it, never on the host: a COPY --from
    through them reads the stage's files, a COPY to them writes into the image."""
    host_dir = tmp_path / "must-stay-empty"
    (ctx / "a").mkdir()
    (ctx / "a" / "b.txt").write_text("b")
    image, _ = build(
        client,
        ctx,
        f"""FROM {bb} AS links
RUN mkdir /real && echo inside > /real/f && ln -s /real /abs && ln -s /etc /etclink
FROM {bb}
COPY --from=links /abs/* /got/
COPY --from=links /etclink/pass* /pw/
RUN ln -s {host_dir} /out
COPY --parents a/b.txt /out/
COPY a/b.txt /out/direct.txt
""",
    )
    out = sh(client, image, f"cat /got/f /pw/passwd; cat {host_dir}/a/b.txt {host_dir}/direct.txt")
    assert out.splitlines() == [
        "inside",
        "root:x:0:0:root:/root:/bin/sh",
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false",
        "bb",
    ]
    assert not host_dir.exists()


def test_add_tar_through_an_image_link_is_refused(client: Client, bb: str, ctx: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    host_dir = tmp_path / "not-here"
    with tarfile.open(ctx / "pkg.tar", "w") as tf:
        info = tarfile.TarInfo("pkg/tool")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BuildError, match=r"Dockerfile:3: ADD: cannot extract pkg.tar: .*outside"):
        build(client, ctx, f"FROM {bb}\nRUN mkdir /opt && ln -s {host_dir} /opt/pkg\n"
                           "ADD pkg.tar /opt/\n")  # fmt: skip
    assert not host_dir.exists()


def test_from_platform_and_add_unpack(client: Client, bb: str, ctx: Path) -> None:
    with tarfile.open(ctx / "t.tar", "w") as tf:
        info = tarfile.TarInfo("inside.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"in"))
    image, _ = build(
        client,
        ctx,
        f"""FROM --platform=$BUILDPLATFORM {bb} AS b
ARG TARGETPLATFORM
RUN echo "$TARGETPLATFORM" > /p
FROM --platform=$TARGETPLATFORM b
ADD --unpack=false t.tar /kept/
ADD t.tar /unpacked/
""",
    )
    out = sh(client, image, "cat /p; ls /kept; ls /unpacked")
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    assert out.split() == [f"linux/{arch}", "t.tar", "inside.txt"]
    with pytest.raises(BuildError, match=r"Dockerfile:1: FROM --platform=linux/s390x: .*only"):
        build(client, ctx, f"FROM --platform=linux/s390x {bb}\n")
    with pytest.raises(DockerfileError, match="--keep-git-dir: git sources are not supported"):
        build(client, ctx, f"FROM {bb}\nADD --keep-git-dir=true t.tar /x\n")


def test_unused_build_args_and_an_inherited_shell(client: Client, bb: str, ctx: Path) -> None:
    _, lines = build(client, ctx, f'FROM {bb}\nSHELL ["/bin/sh", "-ec"]\n',
                        buildargs={"NOPE": "1", "http_proxy": "x"}, tag="shell:1")  # fmt: skip
    assert "[Warning] One or more build-args ['NOPE'] were not consumed" in lines
    image, _ = build(client, ctx, "FROM shell:1\nCMD echo hi\n")
    assert config(client, image)["Cmd"] == ["/bin/sh", "-ec", "echo hi"]


def test_copy_from_a_stage_named_by_an_arg(client: Client, bb: str, ctx: Path) -> None:
    image, _ = build(
        client,
        ctx,
        f"""FROM {bb} AS producer
RUN echo made > /made
FROM {bb}
ARG SRC=producer
COPY --from=$SRC /made /
""",
    )
    assert sh(client, image, "cat /made") == "made\n"
