"""`attach`: connect the caller's terminal (or stdio) to a detached container through its
monitor's attach socket (containers/<id>/attach.sock): the container's output as it comes
(raw for a terminal, else Docker's multiplexed frames), and with stdin, what the caller types
goes to the container's stdin or pty. Ctrl-P Ctrl-Q detaches from a terminal container."""

from __future__ import annotations

import os
import select
import socket
import struct
import sys

from pyrun.runtime.containers import ACTIVE, Container, ContainerNotRunning

DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q


def connect(c: Container) -> socket.socket:
    """The attach socket, reached through the directory's fd (socket paths are short)."""
    dfd = os.open(c.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(f"/proc/self/fd/{dfd}/attach.sock")
        except OSError as e:
            s.close()
            raise ContainerNotRunning(
                f"cannot attach to container {c.name}: {e.strerror or e}"
            ) from None
        return s
    finally:
        os.close(dfd)


def attach(c: Container, *, stdin: bool = True, out_fd: int = 1, err_fd: int = 2) -> int:
    """Copy until the container's current run ends (returns its exit code) or the user
    detaches (returns 0, the container keeps running)."""
    if c.status not in ACTIVE:
        raise ContainerNotRunning(f"cannot attach to container {c.name}: it is not running")
    tty = bool(c.options.get("tty"))
    sock = connect(c)
    in_fd = sys.stdin.fileno() if stdin else -1
    saved = None
    if tty and in_fd >= 0 and os.isatty(in_fd):
        import termios
        import tty as tty_mod

        saved = termios.tcgetattr(in_fd)
        tty_mod.setraw(in_fd)
    detached = False
    pending = b""
    try:
        watch = [sock.fileno()] + ([in_fd] if in_fd >= 0 else [])
        last = b""
        while True:
            ready, _, _ = select.select(watch, [], [])
            if sock.fileno() in ready:
                data = sock.recv(65536)
                if not data:
                    break  # the run is over (or the monitor went away)
                if tty:
                    _write(out_fd, data)
                else:
                    pending += data
                    while len(pending) >= 8:
                        stream, size = pending[0], struct.unpack(">I", pending[4:8])[0]
                        if len(pending) < 8 + size:
                            break
                        _write(err_fd if stream == 2 else out_fd, pending[8 : 8 + size])
                        pending = pending[8 + size :]
            if in_fd >= 0 and in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data:
                    watch = [sock.fileno()]  # stdin closed: keep showing the output
                    continue
                if tty:
                    seq = last + data
                    if DETACH_KEYS in seq:
                        detached = True
                        break
                    last = data[-1:]
                sock.sendall(data)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        sock.close()
    if detached:
        sys.stderr.write("\r\nread escape sequence\r\n")
        return 0
    # The socket closed: this run is over; its exit code is in the state in a moment.
    c.reload()
    try:
        c.wait_stopped(10)
        code = c.state.get("exit_code", 0)
    except ContainerNotRunning:  # removed (--rm)
        return 0
    return int(code) if isinstance(code, int) else 0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
