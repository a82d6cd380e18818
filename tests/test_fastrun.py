"""The native `pyrun` executable: it replays a foreground `run` line from the run template the
Python CLI wrote (rust/fastrun.rs, python/pyrun/runtime/template.py), answers a `build` line
whose last run was all cache hits from its build template (python/pyrun/build/template.py),
and hands every other line to the Python CLI, `pyrun-py`.

Each test puts a copy of the executable in a directory of its own, beside a `pyrun-py` that
logs each call before it execs the real one: the log tells which runs went through Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import mounts_under, needs_root
from pyrun.client import Client

pytestmark = needs_root

NATIVE = Path(sys.executable).parent / "pyrun"
PYTHON_CLI = Path(sys.executable).parent / "pyrun-py"

if not (NATIVE.is_file() and NATIVE.read_bytes()[:4] == b"\x7fELF" and PYTHON_CLI.is_file()):
    pytest.skip(
        f"the native pyrun and pyrun-py are not installed beside {sys.executable} "
        "(bash ci/setup.sh installs them)",
        allow_module_level=True,
    )

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:fast")
    return client


@pytest.fixture
def native(tmp_path: Path, store_root: Path, bb: Client) -> tuple[Run, Path]:
    """(run, log): run("run", ...) runs `pyrun --root STORE run ...` through a copy of the
    native executable; `log` gets a line per call of the Python CLI."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy2(NATIVE, bindir / "pyrun")
    log = tmp_path / "python-calls"
    log.touch()
    wrapper = bindir / "pyrun-py"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {PYTHON_CLI} "$@"\n')
    wrapper.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}

    def run(
        *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bindir / "pyrun"), "--root", str(store_root), *args],
            capture_output=True,
            text=True,
            env={**env, **(extra_env or {})},
            cwd=tmp_path,
            timeout=60,
        )

    return run, log


def calls(log: Path) -> int:
    return len(log.read_text().splitlines())


def test_second_run_of_a_line_skips_python(native: tuple[Run, Path], store_root: Path) -> None:
    run, log = native
    line = (
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "X=1",
        "bb:fast",
        "sh",
        "-c",
        "echo $X; exit 3",
    )
    first = run(*line)
    assert (first.returncode, first.stdout, first.stderr) == (3, "1\n", "")
    assert calls(log) == 1
    assert len(list((store_root / "cache" / "run").glob("*.json"))) == 1
    for _ in range(3):
        again = run(*line)
        assert (again.returncode, again.stdout, again.stderr) == (3, "1\n", "")
    assert calls(log) == 1  # all three replayed
    # --rm: nothing left (containers, trash, mounts).
    assert list((store_root / "containers").iterdir()) == []
    assert list((store_root / "tmp").iterdir()) == []
    assert mounts_under(store_root) == []


def test_replayed_container_has_its_own_records(
    native: tuple[Run, Path], store_root: Path, client: Client
) -> None:
    run, log = native
    line = ("run", "--network", "none", "-l", "k=v", "bb:fast", "hostname")
    assert run(*line).returncode == 0
    assert run(*line).returncode == 0
    assert calls(log) == 1
    made = client.containers.list(all=True)
    assert len(made) == 2
    python_made, replayed = sorted(made, key=lambda c: str(c.record["created"]))
    assert python_made.id != replayed.id and python_made.name != replayed.name
    # The same record but for the container's own id, name and creation time.
    a, b = dict(python_made.record), dict(replayed.record)
    for k in ("id", "name", "created"):
        a.pop(k), b.pop(k)
    assert a == b
    for c in made:
        assert c.status == "exited" and c.state["exit_code"] == 0
        assert c.logs() == f"{c.id[:12]}\n".encode()  # its own hostname, in its own log
        assert c.attrs["Config"]["Labels"] == {"k": "v"}
    # Its runtime directory (on /run's tmpfs) is its own too, beside the Python-made one's.
    assert replayed.run_dir.parent == python_made.run_dir.parent
    assert replayed.run_dir.name == replayed.id
    spec = json.loads((replayed.run_dir / "config.json").read_bytes())
    assert spec["hostname"] == replayed.id[:12]
    assert spec["root"]["path"] == str(replayed.run_dir / "rootfs")
    assert python_made.id not in (replayed.run_dir / "config.json").read_text()
    assert sorted(p.name for p in replayed.run_dir.iterdir()) == sorted(
        p.name for p in python_made.run_dir.iterdir()
    )


def test_changed_inputs_go_back_to_python(native: tuple[Run, Path], client: Client) -> None:
    run, log = native
    line = ("run", "--rm", "--network", "none", "bb:fast", "true")
    assert run(*line).returncode == 0
    assert run(*line).returncode == 0
    assert calls(log) == 1
    client.images.get("bb:fast").tag("bb:other")  # refs.json changes: the image may have too
    assert run(*line).returncode == 0
    assert calls(log) == 2
    assert run(*line).returncode == 0  # the new template
    assert calls(log) == 2
    # Another environment is another line; OLDPWD, which shells change, is not part of it.
    assert run(*line, extra_env={"FOO": "1"}).returncode == 0
    assert calls(log) == 3
    assert run(*line, extra_env={"OLDPWD": "/elsewhere"}).returncode == 0
    assert calls(log) == 3


@pytest.mark.parametrize(
    "line",
    [
        ("run", "--rm", "--name", "fixed", "bb:fast", "true"),  # a name must be checked
        ("run", "--rm", "--network", "none", "-v", "/tmp:/h", "bb:fast", "true"),  # host paths
        ("run", "--rm", "bb:fast", "true"),  # the bridge: addresses are leased per run
        ("run", "--rm", "--network", "none", "-e", "OLDPWD", "bb:fast", "true"),  # unkeyed
        ("run", "--rm", "--network", "none", "bb:fast", "nonexistent-command"),  # failed
    ],
)
def test_lines_without_templates_always_run_in_python(
    native: tuple[Run, Path], line: tuple[str, ...]
) -> None:
    run, log = native
    first, second = run(*line), run(*line)
    assert (first.returncode, first.stdout) == (second.returncode, second.stdout)
    assert calls(log) == 2


def test_start_error_of_a_replayed_line(
    native: tuple[Run, Path], store_root: Path, client: Client
) -> None:
    """A replay that fails to start reports the runtime's error the way the Python CLI does
    (its exit code, one "Error:" line) and records it on the container."""
    run, log = native
    line = ("run", "--network", "none", "bb:fast", "/bin/true")
    assert run(*line).returncode == 0
    assert calls(log) == 1
    # Take the command out of the image's unpacked layer behind the store's back: the
    # template stays valid (layers never change in a store), the start fails.
    for layer in (store_root / "layers" / "sha256").iterdir():
        target = layer / "diff" / "bin" / "true"
        if os.path.lexists(target):
            target.unlink()
    failed = run(*line)
    assert calls(log) == 1
    assert failed.returncode == 127, failed.stderr
    assert failed.stderr.startswith("Error: ") and failed.stderr.count("\n") == 1
    assert "/bin/true" in failed.stderr
    newest = max(client.containers.list(all=True), key=lambda c: str(c.record["created"]))
    assert newest.state["exit_code"] == 127 and newest.state["error"]


def test_argparse_lines_get_templates_too(native: tuple[Run, Path]) -> None:
    run, log = native
    line = ("run", "--rm", "--network=none", "-eA=1", "bb:fast", "sh", "-c", "echo $A")
    assert [run(*line).stdout for _ in range(3)] == ["1\n"] * 3
    assert calls(log) == 1


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM bb:fast AS one\nCOPY a.txt /a.txt\nRUN cp /a.txt /b.txt\n"
        'FROM bb:fast\nCOPY --from=one /b.txt /c.txt\nCMD ["cat", "/c.txt"]\n'
    )
    (ctx / "a.txt").write_text("one\n")
    return ctx


def test_cached_build_is_answered_natively(
    native: tuple[Run, Path], context: Path, tmp_path: Path, client: Client
) -> None:
    run, log = native
    iid = tmp_path / "iid"
    line = ("build", "--progress", "plain", "--iidfile", str(iid), "-t", "app:1", str(context))
    first = run(*line)
    assert first.returncode == 0, first.stderr
    assert "CACHED" not in first.stdout
    second = run(*line)  # every step from the cache: the template is written
    assert second.returncode == 0 and second.stdout.count("CACHED") == 4
    assert calls(log) == 2
    iid.unlink()
    for _ in range(2):
        again = run(*line)
        assert (again.returncode, again.stdout, again.stderr) == (0, second.stdout, second.stderr)
    assert calls(log) == 2
    assert iid.read_text() == client.images.get("app:1").id
    # A touched file (same bytes): Python checks, finds the cache again, writes a new template.
    os.utime(context / "a.txt")
    assert run(*line).stdout.count("CACHED") == 4
    assert calls(log) == 3
    assert run(*line).returncode == 0
    assert calls(log) == 3
    # A changed byte: Python rebuilds from that step on.
    (context / "a.txt").write_text("two\n")
    rebuilt = run(*line)
    assert rebuilt.returncode == 0 and rebuilt.stdout.count("CACHED") == 0
    assert calls(log) == 4
    assert client.containers.run("app:1", remove=True) == b"two\n"
    # The tag moved elsewhere: Python again (it puts the tag back).
    client.images.get("bb:fast").tag("app:1")
    run(*line)
    assert calls(log) == 5
    assert client.images.get("app:1").id == iid.read_text()


def test_kill_9_of_a_replay_leaves_a_recoverable_container(
    native: tuple[Run, Path], store_root: Path, client: Client, tmp_path: Path
) -> None:
    """A replaying `pyrun` killed with SIGKILL mid-run: its container dies with it (the
    runtime's parent-death signal), and the next reader finds it stopped; rm leaves nothing."""
    import signal
    import time

    _run, log = native
    # --init: the reaper as pid 1 passes SIGINT on to sleep (which as pid 1 would ignore it).
    line = ("run", "--network", "none", "--init", "bb:fast", "sleep", "30")
    bindir = tmp_path / "bin"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    argv = [str(bindir / "pyrun"), "--root", str(store_root), *line]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=env, cwd=tmp_path)

    first = start()  # through Python: writes the template when the run ends
    time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # forwarded to sleep, which dies: the run ends
    first.wait(timeout=10)
    assert calls(log) == 1
    assert list((store_root / "cache" / "run").glob("*.json"))
    replay = start()
    deadline = time.monotonic() + 10
    while not any(c.status == "running" for c in client.containers.list(all=True)):
        assert time.monotonic() < deadline, "the replayed container never ran"
        time.sleep(0.05)
    assert calls(log) == 1  # replayed
    replay.kill()
    replay.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(c.status == "running" for c in Client(store_root).containers.list(all=True)):
        assert time.monotonic() < deadline, "the container outlived its runner"
        time.sleep(0.05)
    for c in Client(store_root).containers.list(all=True):
        c.remove(force=True)
    assert mounts_under(store_root) == []
    assert list((store_root / "containers").iterdir()) == []


def test_bad_input_through_the_executable(
    native: tuple[Run, Path], store_root: Path, tmp_path: Path
) -> None:
    """Malformed templates are Python's to redo; bad flags and missing images get the Python
    CLI's one-line errors and exit codes; nothing is left half made."""
    run, log = native
    line = ("run", "--rm", "--network", "none", "bb:fast", "echo", "ok")
    assert run(*line).stdout == "ok\n"
    (template,) = (store_root / "cache" / "run").glob("*.json")
    for garbage in (b"", b"{not json", b'{"format": 99}', json.dumps({"format": 1}).encode()):
        template.write_bytes(garbage)
        again = run(*line)
        assert (again.returncode, again.stdout, again.stderr) == (0, "ok\n", "")
    assert calls(log) == 5
    assert json.loads(template.read_bytes())["format"] == 2  # written anew, whole
    bad = run("run", "--pull", "sometimes", "bb:fast", "true")
    assert bad.returncode == 125 and bad.stderr.startswith("pyrun: argument --pull: ")
    missing = run("run", "--rm", "--network", "none", "no-such-image:1", "true")
    assert missing.returncode == 125
    assert missing.stderr.startswith("Error: ") and missing.stderr.count("\n") == 1
    assert list((store_root / "containers").iterdir()) == []
    assert list((store_root / "tmp").iterdir()) == []
    # Without the Python CLI beside it or on $PATH, the executable says so in one line (and replays still
    # work: they need no Python).
    (tmp_path / "bin" / "pyrun-py").unlink()
    alone = run("images", extra_env={"PATH": "/usr/bin:/bin"})  # nor on $PATH
    assert alone.returncode == 125
    assert (
        alone.stderr.startswith("pyrun: cannot start the Python CLI")
        and alone.stderr.count("\n") == 1
    )
    assert run(*line).stdout == "ok\n"


def test_replay_run_declines_malformed_templates(tmp_path: Path) -> None:
    from pyrun import _core

    for text in (b"", b"\xff\xfe", b"[]", b'{"format": 1}', json.dumps({"format": 2}).encode()):
        assert _core.replay_run(str(tmp_path), text) is None
    _core.remove_tree(str(tmp_path / "missing"))  # nothing to remove is not an error
    assert list(tmp_path.iterdir()) == []
