"""Interop with the peers on this machine: the Docker engine's save/load and skopeo's
docker-archive and OCI transports read what pyrun writes, and pyrun reads what they write."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import needs_docker, needs_root, needs_tool
from pyrun.client import Client

pytestmark = needs_root


def sh(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{cmd}: {res.stderr}"
    return res.stdout


def docker_major() -> int:
    return int(sh("docker", "version", "--format", "{{.Server.Version}}").split(".")[0])


@pytest.fixture
def docker_image(busybox_tar: Path) -> Iterator[str]:
    name = "pyrun-interop/busybox:1"
    sh("docker", "import", str(busybox_tar), name)
    yield name
    subprocess.run(["docker", "rmi", "-f", name], capture_output=True)


@needs_docker
def test_pyrun_loads_docker_save(client: Client, docker_image: str, tmp_path: Path) -> None:
    archive = tmp_path / "docker.tar"
    sh("docker", "save", "-o", str(archive), docker_image)
    (img,) = client.images.load(archive)
    assert img.tags == [docker_image]
    docker_id = sh("docker", "image", "inspect", "--format", "{{.Id}}", docker_image).strip()
    assert img.id == docker_id
    assert (client.store.layer_diff(img.record.diff_ids[0]) / "bin" / "busybox").is_file()
    assert client.system.check() == []


@needs_docker
@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_docker_loads_pyrun_save(
    client: Client, busybox_tar: Path, tmp_path: Path, fmt: str
) -> None:
    if fmt == "oci" and docker_major() < 25:
        pytest.skip("this Docker engine is older than 25: its `docker load` reads no OCI layout")
    name = f"pyrun-interop/saved-{fmt}:1"
    img = client.images.import_image(
        busybox_tar, name, changes=['CMD ["/bin/busybox", "echo", "hi"]']
    )
    archive = tmp_path / "pyrun.tar"
    client.images.save([name], archive, format=fmt)
    try:
        out = sh("docker", "load", "-i", str(archive))
        assert name in out
        assert sh("docker", "image", "inspect", "--format", "{{.Id}}", name).strip() == img.id
        assert sh("docker", "run", "--rm", "--network", "none", name).strip() == "hi"
    finally:
        subprocess.run(["docker", "rmi", "-f", name], capture_output=True)


@needs_tool("skopeo")
def test_skopeo_reads_pyrun_archives(client: Client, busybox_tar: Path, tmp_path: Path) -> None:
    img = client.images.import_image(busybox_tar, "sk/bb:1")
    darchive = tmp_path / "d.tar"
    oarchive = tmp_path / "o.tar"
    client.images.save(["sk/bb:1"], darchive)
    client.images.save(["sk/bb:1"], oarchive, format="oci")
    info = json.loads(sh("skopeo", "inspect", f"docker-archive:{darchive}"))
    assert info["Architecture"] == "amd64" and len(info["Layers"]) == 1
    info = json.loads(sh("skopeo", "inspect", f"oci-archive:{oarchive}"))
    assert info["Digest"] == img.record.manifest_digest
    raw = json.loads(sh("skopeo", "inspect", "--config", "--raw", f"oci-archive:{oarchive}"))
    assert raw["rootfs"]["diff_ids"] == img.record.diff_ids


@needs_tool("skopeo")
def test_pyrun_reads_skopeo_output(client: Client, busybox_tar: Path, tmp_path: Path) -> None:
    img = client.images.import_image(busybox_tar, "sk/src:1")
    darchive = tmp_path / "d.tar"
    client.images.save(["sk/src:1"], darchive)
    sh("skopeo", "copy", "-q", f"docker-archive:{darchive}", f"oci:{tmp_path}/layout:v9")
    sh(
        "skopeo",
        "copy",
        "-q",
        f"docker-archive:{darchive}",
        f"docker-archive:{tmp_path}/sk.tar:sk/out:2",
    )
    other = Client(tmp_path / "other")
    other.images.copy(f"oci:{tmp_path}/layout:v9", "from-oci:1")
    (loaded,) = other.images.load(tmp_path / "sk.tar")
    assert loaded.tags == ["sk/out:2"]
    assert other.images.get("from-oci:1").id == img.id == loaded.id
    assert other.system.check() == []
