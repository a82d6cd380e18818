"""The examples/ Dockerfiles build and run: examples/hello (two busybox stages, offline) and
examples/compiled (gcc from the Debian mirror in a Debian stage, the static binary alone in a
busybox stage; skipped when the mirror cannot be reached)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root
from pyrun.client import Client

pytestmark = needs_root
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def mirror_reachable() -> bool:
    try:
        socket.create_connection(("deb.debian.org", 80), timeout=3).close()
        return True
    except OSError:
        return False


def test_hello_example(client: Client, busybox_tar: Path, pyrun: PyrunRunner) -> None:
    client.images.import_image(busybox_tar, "demo/busybox:1", changes=['CMD ["sh"]'])
    r = pyrun("build", "-t", "demo/hello:1", str(EXAMPLES / "hello"))
    assert r.returncode == 0, r.stdout + r.stderr
    out = client.containers.run("demo/hello:1", ["pyrun"], remove=True).decode()
    assert out == "hello from a pyrun-built image, pyrun! (uid 65534, in /tmp)\n"


def test_compiled_example(
    client: Client, busybox_tar: Path, debian_tar: Path, pyrun: PyrunRunner
) -> None:
    if not mirror_reachable():
        pytest.skip("needs the Debian mirror (deb.debian.org:80) for gcc")
    client.images.import_image(busybox_tar, "demo/busybox:1", changes=['CMD ["sh"]'])
    client.images.import_image(debian_tar, "demo/debian:12")
    r = pyrun("build", "-t", "demo/compiled:1", str(EXAMPLES / "compiled"), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert client.containers.run("demo/compiled:1", remove=True) == (
        b"hello, world! (a static C binary, uid 65534)\n"
    )
    # Only the binary went into the small stage: busybox plus one file.
    layers = client.images.get("demo/compiled:1").attrs["RootFS"]["Layers"]
    assert len(layers) == 2
    top = client.store.layer_diff(layers[-1])
    assert sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()) == [
        "usr/local/bin/hello"
    ]
