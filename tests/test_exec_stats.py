"""`exec -d`, streaming `stats` (CLI and API) and `port`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root
from pyrun.client import Client

pytestmark = needs_root


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:es")
    return client


def test_exec_detached_runs_in_the_background(bb: Client, pyrun: PyrunRunner) -> None:
    cid = pyrun("run", "-d", "bb:es", "sleep", "100").stdout.strip()
    t0 = time.monotonic()
    r = pyrun("exec", "-d", cid, "sh", "-c", "sleep 1; echo done > /tmp/mark")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert time.monotonic() - t0 < 1.0 + 1.5  # it did not wait for the command (python start aside)
    assert pyrun("exec", cid, "cat", "/tmp/mark").returncode == 1  # not yet
    deadline = time.monotonic() + 10
    while pyrun("exec", cid, "cat", "/tmp/mark").stdout != "done\n":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Not found / not executable / not running: the codes of a foreground exec, one line.
    r = pyrun("exec", "-d", cid, "nosuchcmd")
    assert r.returncode == 127 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = pyrun("exec", "-d", cid, "/etc/passwd")
    assert r.returncode == 126, r.stderr
    pyrun("stop", "-t", "0", cid)
    r = pyrun("exec", "-d", cid, "true")
    assert r.returncode != 0 and "not running" in r.stderr


def test_stats_streams_until_interrupted(bb: Client, store_root: Path) -> None:
    c = bb.containers.run("bb:es", ["sh", "-c", "while :; do :; done"], detach=True)
    samples = c.stats(stream=True)
    first, second = next(samples), next(samples)
    assert first["ID"] == c.id and second["CPUPerc"] > 10.0
    with subprocess.Popen(
        [sys.executable, "-m", "pyrun.cli", "--root", str(store_root), "stats", "--format", "json", c.id],
        stdout=subprocess.PIPE, text=True,
    ) as p:  # fmt: skip
        assert p.stdout is not None
        lines = [json.loads(p.stdout.readline()) for _ in range(3)]
        assert [x["ID"] for x in lines] == [c.id] * 3
        # The named container stops: the stream ends by itself.
        c.kill()
        assert p.wait(timeout=10) == 0
    assert list(samples) == []


def test_port_lists_published_ports(bb: Client, pyrun: PyrunRunner) -> None:
    cid = pyrun(
        "run", "-d", "-p", "127.0.0.1::80", "-p", "53/udp", "bb:es", "sleep", "100"
    ).stdout.strip()
    out = pyrun("port", cid).stdout.splitlines()
    assert len(out) == 2
    assert out[0].startswith("53/udp -> 0.0.0.0:") and out[1].startswith("80/tcp -> 127.0.0.1:")
    assert pyrun("port", cid, "80").stdout.startswith("127.0.0.1:")
    r = pyrun("port", cid, "81")
    assert r.returncode == 1 and "no public port" in r.stderr
    assert "->80/tcp" in pyrun("ps").stdout
