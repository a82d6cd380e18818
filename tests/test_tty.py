"""`-t`: a pty of the container's own devpts as its controlling terminal, driven from a real
terminal (the tests run the CLI under a pty of their own): window size, raw mode and its
restoration, `-i` input, exec -it, and detached -t output in the logs."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from helpers import needs_root
from pyrun.client import Client

pytestmark = needs_root


def under_pty(
    argv: list[str], typed: bytes = b"", size: tuple[int, int] = (33, 101)
) -> tuple[int, bytes]:
    """Run argv with a new pty as its terminal; type `typed` once it has started. Returns
    (exit code, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.execv(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    out = b""
    if typed:
        time.sleep(0.5)
        os.write(fd, typed)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child and its terminal are gone
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


@pytest.fixture
def cli(client: Client, busybox_tar: Path, store_root: Path) -> list[str]:
    client.images.import_image(busybox_tar, "bb:tty")
    return [sys.executable, "-m", "pyrun.cli", "--root", str(store_root)]


def test_run_t_gets_a_terminal_of_its_size(cli: list[str]) -> None:
    code, out = under_pty(
        [*cli, "run", "--rm", "-t", "bb:tty", "sh", "-c", "tty; stty size; echo $TERM; exit 3"],
        size=(33, 101),
    )
    assert code == 3
    # One \r\n per line: the container's pty translates, the outer terminal is raw.
    assert out == b"/dev/pts/0\r\n33 101\r\nxterm\r\n"


def test_run_it_takes_input_and_restores_the_terminal(cli: list[str]) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover
        os.execv(cli[0], [*cli, "run", "--rm", "-it", "bb:tty", "sh"])
    before = termios.tcgetattr(fd)
    time.sleep(0.5)
    os.write(fd, b"echo $((6*7)); exit 5\n")
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 20)
        if not ready:
            break
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
        if b"42" in out and os.waitpid(pid, os.WNOHANG)[0]:
            break
    _, status = os.waitpid(pid, 0)
    after = termios.tcgetattr(fd)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 5
    assert b"42\r\n" in out
    assert after[3] & termios.ICANON and after[3] & termios.ECHO  # cooked again
    assert after[:4] == before[:4]


def test_exec_it_and_detached_t(cli: list[str], client: Client) -> None:
    c = client.containers.run("bb:tty", ["sleep", "100"], detach=True, name="long")
    code, out = under_pty([*cli, "exec", "-it", "long", "sh"], typed=b"tty; exit 6\n")
    assert code == 6 and b"/dev/pts/0\r\n" in out
    code, out = under_pty([*cli, "exec", "-t", "long", "stty", "size"], size=(20, 70))
    assert (code, out) == (0, b"20 70\r\n")
    c.remove(force=True)

    d = client.containers.run(
        "bb:tty", ["sh", "-c", "tty; echo detached"], detach=True, tty=True, name="dt"
    )
    assert d.wait()["StatusCode"] == 0
    assert d.logs() == b"/dev/pts/0\r\ndetached\r\n"


def test_attach_to_detached_containers(cli: list[str], client: Client) -> None:
    """run -dit, then attach from a terminal: input reaches the shell, its exit code comes
    back; Ctrl-P Ctrl-Q detaches and leaves the container running; -di without a terminal
    takes piped input and keeps stdout and stderr apart."""
    import subprocess

    r = subprocess.run([*cli, "run", "-dit", "--name", "shell", "bb:tty", "sh"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    code, out = under_pty([*cli, "attach", "shell"], typed=b"\x10\x11")
    assert code == 0 and b"read escape sequence" in out
    c = client.containers.get("shell")
    assert c.status == "running"
    code, out = under_pty([*cli, "attach", "shell"], typed=b"echo $((40+2)); exit 3\n")
    assert code == 3 and b"42\r\n" in out, out
    c.reload()
    assert c.status == "exited"

    r = subprocess.run(
        [*cli, "run", "-di", "--name", "reader", "bb:tty", "sh", "-c",
         'while read l; do echo "out $l"; echo "err $l" >&2; done'],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen([*cli, "attach", "reader"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(0.5)
    assert proc.stdin is not None
    proc.stdin.write(b"one\ntwo\n")
    proc.stdin.flush()
    reader = client.containers.get("reader")
    deadline = time.monotonic() + 20
    while b"out two" not in reader.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the monitor sends to the attached client as it logs; let it arrive
    reader.kill()
    out_b, err_b = proc.communicate(timeout=10)
    assert out_b == b"out one\nout two\n" and b"err one\nerr two\n" in err_b
    assert proc.returncode == 137
