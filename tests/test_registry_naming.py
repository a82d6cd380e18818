"""Registry naming without the network: Docker Hub's three names (`docker.io` in references,
`registry-1.docker.io` on the wire, `https://index.docker.io/v1/` in config.json), the
credential lookup order (credHelpers, credsStore, auths) through a real docker-credential-*
helper program, and an HTTP round trip of `busybox` through a local registry standing in for
Docker Hub ($PYRUN_DOCKER_HUB_ENDPOINT). Also --insecure-registry: TLS unless told."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import PyrunRunner, needs_root, needs_tool
from pyrun.client import Client
from pyrun.reference import parse
from pyrun.registry import client as rc
from test_registry import start_registry

HELPER = """#!/bin/sh
# docker-credential-pyruntest: `get` answers for one server, as the real helpers do.
[ "$1" = get ] || exit 1
read -r server
echo "$server" >> {log}
if [ "$server" = "{server}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
"""


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    monkeypatch.delenv("PYRUN_DOCKER_HUB_ENDPOINT", raising=False)
    return d / "config.json"


def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str, user: str,
           secret: str) -> Path:  # fmt: skip
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "helper.log"
    script = bindir / "docker-credential-pyruntest"
    script.write_text(HELPER.format(log=log, server=server, user=user, secret=secret))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def test_docker_hub_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYRUN_DOCKER_HUB_ENDPOINT", raising=False)
    for text in ("busybox", "docker.io/busybox", "index.docker.io/library/busybox:latest"):
        ref = parse(text)
        assert (ref.domain, ref.path, ref.tag) == ("docker.io", "library/busybox", "latest")
        reg = rc.Registry(ref.domain)
        assert (reg.domain, reg.host, reg.scheme) == ("docker.io", "registry-1.docker.io", "https")
    assert parse("user/app").path == "user/app" and parse("user/app").domain == "docker.io"
    for server in ("docker.io", "index.docker.io", "https://index.docker.io/v1/",
                   "registry-1.docker.io", "https://registry-1.docker.io/v2/"):  # fmt: skip
        assert rc.server_domain(server) == "docker.io"
        assert rc.credential_key(rc.server_domain(server)) == "https://index.docker.io/v1/"
        assert rc.Registry(server).host == "registry-1.docker.io"
    for server, domain in (("localhost:5000", "localhost:5000"),
                           ("https://quay.io/", "quay.io"), ("http://127.0.0.1:5055", "127.0.0.1:5055")):  # fmt: skip
        assert rc.server_domain(server) == domain and rc.credential_key(domain) == domain
    assert rc.Registry("quay.io").scheme == "https"
    assert rc.Registry("localhost:5000").scheme == "http"
    assert rc.Registry("127.0.0.9:5000").scheme == "http"
    assert rc.Registry("[::1]:5000").scheme == "http"
    monkeypatch.setenv("PYRUN_DOCKER_HUB_ENDPOINT", "127.0.0.1:5999")
    reg = rc.Registry("docker.io")
    assert (reg.domain, reg.host, reg.scheme) == ("docker.io", "127.0.0.1:5999", "http")
    assert rc.Registry("quay.io").host == "quay.io"  # the override is Docker Hub's only
    monkeypatch.setenv("PYRUN_INSECURE_REGISTRIES", "r.example:5000, other")
    insecure = rc.Registry("r.example:5000")  # TLS unverified, or HTTP if it has no TLS
    assert (insecure.scheme, insecure.verify, insecure._probe) == ("https", False, True)
    assert rc.Registry("r.example").verify is True
    assert rc.Registry("127.0.0.9:5000").verify is False


def test_credential_lookup_order(
    docker_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auths under Docker Hub's key; credHelpers beats credsStore beats auths; a helper that
    has nothing (exit 1) falls through to auths; a helper gets the server URL on stdin."""

    def auth(user: str, pw: str) -> dict[str, str]:
        return {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}

    docker_config.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": auth("hubuser", "hubpw"),
        "r.example:5000": auth("ruser", "rpw"),
        "https://secure.example": auth("suser", "spw"),
    }}))  # fmt: skip
    assert rc.credentials("docker.io") == ("hubuser", "hubpw")
    assert rc.credentials("r.example:5000") == ("ruser", "rpw")
    assert rc.credentials("secure.example") == ("suser", "spw")
    assert rc.credentials("none.example") is None

    log = helper(tmp_path, monkeypatch, "r.example:5000", "helperuser", "helpersecret")
    cfg = json.loads(docker_config.read_text())
    cfg["credHelpers"] = {"r.example:5000": "pyruntest"}
    docker_config.write_text(json.dumps(cfg))
    assert rc.credentials("r.example:5000") == ("helperuser", "helpersecret")
    assert rc.credentials("docker.io") == ("hubuser", "hubpw")  # no helper for it
    cfg["credsStore"] = "pyruntest"  # everyone asks it; it knows only r.example:5000
    docker_config.write_text(json.dumps(cfg))
    assert rc.credentials("docker.io") == ("hubuser", "hubpw")  # not found there: auths
    assert log.read_text().splitlines()[-1] == "https://index.docker.io/v1/"
    cfg["credsStore"] = "absent-helper"  # not installed: auths still answer
    docker_config.write_text(json.dumps(cfg))
    assert rc.credentials("secure.example") == ("suser", "spw")
    docker_config.write_text(json.dumps({"auths": {"bad": {"auth": "!!not base64"}}}))
    with pytest.raises(rc.RegistryError, match=r"auths\['bad'\].auth is not base64"):
        rc.credentials("bad")


@needs_root
@needs_tool("docker-registry")
def test_busybox_through_a_stand_in_for_docker_hub(
    client: Client,
    busybox_tar: Path,
    basic_registry: tuple[str, str],
    docker_config: Path,
    tmp_path: Path,
    pyrun: PyrunRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`busybox` is docker.io/library/busybox: with PYRUN_DOCKER_HUB_ENDPOINT at a local
    registry, `pyrun login` (no server: Docker Hub) stores the credentials under
    https://index.docker.io/v1/, push and pull of `busybox` reach library/busybox there, and
    `images` shows the short name. Credentials from a helper named for Docker Hub work too."""
    host, password = basic_registry
    monkeypatch.setenv("PYRUN_DOCKER_HUB_ENDPOINT", host)
    client.images.import_image(busybox_tar, "busybox", changes=['CMD ["echo", "from the hub"]'])
    r = pyrun("push", "busybox")
    assert r.returncode == 1 and "authentication required" in r.stderr, r.stderr
    r = pyrun("login", "-u", "docker", "--password-stdin", input=password + "\n")
    assert r.returncode == 0 and r.stdout == "Login Succeeded\n", r.stderr
    assert list(json.loads(docker_config.read_text())["auths"]) == ["https://index.docker.io/v1/"]
    r = pyrun("push", "busybox")
    assert r.returncode == 0, r.stderr
    api = rc.Registry(host)
    api._override = ("docker", password)
    try:
        assert api.tags("library/busybox") == ["latest"]
    finally:
        api.close()

    fresh = tmp_path / "fresh"
    r = pyrun("--root", str(fresh), "pull", "busybox")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "busybox:latest"
    r = pyrun("--root", str(fresh), "images", "--format", "json")
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (row["Repository"], row["Tag"]) == ("busybox", "latest")
    assert Client(fresh).containers.run("busybox", remove=True) == b"from the hub\n"

    r = pyrun("logout")
    assert r.returncode == 0 and "https://index.docker.io/v1/" in r.stdout, r.stderr
    assert json.loads(docker_config.read_text())["auths"] == {}
    log = helper(tmp_path, monkeypatch, "https://index.docker.io/v1/", "docker", password)
    docker_config.write_text(
        json.dumps({"credHelpers": {"https://index.docker.io/v1/": "pyruntest"}})
    )
    r = pyrun("--root", str(tmp_path / "fresh2"), "pull", "-q", "docker.io/library/busybox")
    assert r.returncode == 0, r.stderr
    assert "https://index.docker.io/v1/" in log.read_text()


@needs_root
@needs_tool("docker-registry")
@needs_tool("openssl")
def test_insecure_registry_flag(
    client: Client,
    busybox_tar: Path,
    tmp_path: Path,
    pyrun: PyrunRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry not on localhost/127.0.0.0/8 by name is spoken to over TLS, verified:
    `127.1:PORT` (the same loopback address, spelt so it is not recognised) fails as one line,
    against a plain-HTTP registry and against one with a self-signed certificate.
    --insecure-registry: TLS without verification where the registry speaks TLS, else plain
    HTTP (Docker's order)."""
    d = tmp_path / "reg"
    d.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=pyrun-test-registry", "-keyout", str(d / "key.pem"),
         "-out", str(d / "cert.pem")],
        capture_output=True, check=True,
    )  # fmt: skip
    plain = start_registry(d)
    hosts = [next(plain).replace("127.0.0.1", "127.1")]
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    tls = start_registry(tls_dir)
    with monkeypatch.context() as m:  # the registry's own override of http.tls
        m.setenv("REGISTRY_HTTP_TLS_CERTIFICATE", str(d / "cert.pem"))
        m.setenv("REGISTRY_HTTP_TLS_KEY", str(d / "key.pem"))
        hosts.append(next(tls).replace("127.0.0.1", "127.1"))
    try:
        for other, why in zip(hosts, ("SSL", "CERTIFICATE_VERIFY_FAILED"), strict=True):
            client.images.import_image(busybox_tar, f"{other}/tls/bb:1")
            r = pyrun("push", f"{other}/tls/bb:1")
            assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert why in r.stderr, r.stderr
            r = pyrun("--insecure-registry", other, "push", f"{other}/tls/bb:1")
            assert r.returncode == 0, r.stderr
            r = pyrun("--insecure-registry", other, "--root", str(tmp_path / "fresh"), "pull",
                      f"{other}/tls/bb:1")  # fmt: skip
            assert r.returncode == 0, r.stderr
        # Which way each went: plain HTTP to the first, TLS (unverified) to the second.
        monkeypatch.setenv("PYRUN_INSECURE_REGISTRIES", ",".join(hosts))
        for other, scheme in zip(hosts, ("http", "https"), strict=True):
            api = rc.Registry(other)
            try:
                assert api.tags("tls/bb") == ["1"] and api.scheme == scheme
            finally:
                api.close()
    finally:
        plain.close()
        tls.close()
