"""Multi-platform images kept whole (`pull --all-platforms`, `image copy --all`: the local store
keeps the index, a docker-archive cannot) and OCI 1.1 referrers (artifacts with a `subject`:
listed by the referrers API or, on Debian's 2.8, by the `sha256-<hex>` fallback tag; copied
with `--referrers` between registries and OCI layouts)."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from helpers import PyrunRunner, needs_root, needs_tool
from pyrun import oci
from pyrun.client import Client
from pyrun.registry.client import Registry
from test_registry_faults import RegistryProcess

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


def tiny_rootfs(path: Path, text: str) -> Path:
    with tarfile.open(path, "w") as tf:
        data = text.encode()
        ti = tarfile.TarInfo("hello")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return path


def member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr.strip()


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[RegistryProcess]:
    r = RegistryProcess(tmp_path / "registry")
    yield r
    r.kill()


def push_index(client: Client, busybox_tar: Path, tmp_path: Path, addr: str) -> dict[str, Any]:
    """ix/multi:1 on the registry: this host's busybox (CMD echo host) and an arm64 image of
    one small layer of its own (so its layer is not this host's)."""
    host = oci.host_platform()
    other = "arm64" if host["architecture"] != "arm64" else "amd64"
    client.images.import_image(busybox_tar, f"{addr}/ix/multi:host",
                               changes=['CMD ["echo", "host"]'])  # fmt: skip
    client.images.import_image(tiny_rootfs(tmp_path / "tiny.tar", "other platform"),
                               f"{addr}/ix/multi:other", platform=f"linux/{other}")  # fmt: skip
    descs = []
    for tag, plat in (("host", host), ("other", {"os": "linux", "architecture": other})):
        rec = client.images.get(f"{addr}/ix/multi:{tag}").record
        client.images.push(f"{addr}/ix/multi:{tag}")
        size = client.store.blob_path(rec.manifest_digest).stat().st_size
        descs.append(oci.descriptor(oci.OCI_MANIFEST, rec.manifest_digest, size,
                                    platform={"os": plat["os"], "architecture": plat["architecture"]}))  # fmt: skip
    body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": descs}).encode()
    api = Registry(addr)
    try:
        api.put_manifest("ix/multi", "1", body, oci.OCI_INDEX)
    finally:
        api.close()
    other_rec = client.images.get(f"{addr}/ix/multi:other").record
    out = {"index": oci.sha256_bytes(body), "host": descs[0]["digest"], "other": descs[1]["digest"],
           "other_layer": other_rec.layers[0]["digest"], "other_diff": other_rec.diff_ids[0]}  # fmt: skip
    for tag in ("host", "other"):
        client.images.remove(f"{addr}/ix/multi:{tag}")
    return out


@needs_root
@needs_tool("docker-registry")
def test_pull_all_platforms_keeps_the_index(
    client: Client, busybox_tar: Path, reg: RegistryProcess, tmp_path: Path, pyrun: PyrunRunner
) -> None:
    ix = push_index(client, busybox_tar, tmp_path, reg.addr)
    name = f"{reg.addr}/ix/multi:1"
    fresh_root = tmp_path / "fresh"
    fresh = Client(fresh_root)
    r = pyrun("--root", str(fresh_root), "pull", "--all-platforms", name)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {ix['index']}" in r.stdout, r.stdout  # what the tag names, as Docker
    (img,) = fresh.images.list()
    assert img.record.manifest_digest == ix["host"] and img.tags == [name]
    assert img.attrs["RepoDigests"] == [f"{reg.addr}/ix/multi@{ix['index']}"]
    # `images --digests` shows the digest the registry knows it by, as Docker does.
    r = pyrun("--root", str(fresh_root), "images", "--digests")
    assert ix["index"] in r.stdout and ix["host"] not in r.stdout, r.stdout
    store = fresh.store
    # The other platform's blobs are kept, not unpacked; the index is kept.
    assert store.has_blob(ix["index"]) and store.has_blob(ix["other"])
    assert store.has_blob(ix["other_layer"]) and not store.has_layer(ix["other_diff"])
    assert fresh.containers.run(name, remove=True) == b"host\n"
    store.gc()
    assert store.has_blob(ix["other_layer"]) and store.check() == []

    # Pushed from the store, the index goes whole (the other platform's blobs included).
    r = pyrun("--root", str(fresh_root), "tag", name, f"{reg.addr}/ix/again:1")
    assert r.returncode == 0, r.stderr
    r = pyrun("--root", str(fresh_root), "push", f"{reg.addr}/ix/again:1")
    assert r.returncode == 0 and ix["index"] in r.stdout, r.stdout + r.stderr
    api = Registry(reg.addr)
    try:
        assert api.get_manifest("ix/again", "1")[2] == ix["index"]
        assert api.has_blob("ix/again", ix["other_layer"])
    finally:
        api.close()
    # An OCI archive holds the index; a docker-archive cannot: one line, nothing written.
    r = pyrun("--root", str(fresh_root), "image", "copy", "--all", name,
              f"oci-archive:{tmp_path / 'multi.tar'}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    if shutil.which("skopeo"):
        out = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{tmp_path / 'multi.tar'}"],
                             capture_output=True, check=True).stdout  # fmt: skip
        assert oci.sha256_bytes(out) == ix["index"]
    line = one_line(pyrun("image", "copy", "--all", f"docker://{name}",
                          f"docker-archive:{tmp_path / 'multi-docker.tar'}"))  # fmt: skip
    assert "docker-archive holds one image per name" in line and "--platform" in line
    assert not (tmp_path / "multi-docker.tar").exists()
    line = one_line(pyrun("image", "copy", "--all", "--platform", "linux/arm64",
                          f"docker://{name}", "x:1"))  # fmt: skip
    assert "--all" in line and "--platform" in line
    # `save` to a docker-archive takes this host's image, to an OCI archive the index whole;
    # a plain pull of the tag names it alone.
    r = pyrun("--root", str(fresh_root), "save", "-o", str(tmp_path / "one.tar"), name)
    assert r.returncode == 0, r.stderr
    (entry,) = json.loads(member(tmp_path / "one.tar", "manifest.json"))
    assert entry["RepoTags"] == [name]
    r = pyrun("--root", str(fresh_root), "save", "--format", "oci-archive",
              "-o", str(tmp_path / "whole.tar"), name)  # fmt: skip
    assert r.returncode == 0, r.stderr
    index = json.loads(member(tmp_path / "whole.tar", "index.json"))
    (entry,) = index["manifests"]
    assert entry["digest"] == ix["index"] and entry["mediaType"] == oci.OCI_INDEX
    loaded = Client(tmp_path / "loaded").images.load(tmp_path / "whole.tar")
    assert [img.record.manifest_digest for img in loaded] == [ix["host"]]
    assert fresh.images.pull(name).record.manifest_digest == ix["host"]
    assert "index" not in store.load_refs()["images"][ix["host"]]
    # (By this host's platform from the index: RepoDigests still names the index; the push
    # above added where it went.)
    assert fresh.images.get(name).attrs["RepoDigests"] == [
        f"{reg.addr}/ix/again@{ix['index']}", f"{reg.addr}/ix/multi@{ix['index']}"]  # fmt: skip
    store.gc()
    assert not store.has_blob(ix["other_layer"]) and store.check() == []
    assert ix["host"] not in store.load_refs().get("indexes", {})
    # Pulled whole again, removed, pulled alone: nothing of the index is kept alive.
    fresh.images.pull(name, all_platforms=True)
    fresh.images.remove(f"{reg.addr}/ix/again:1")
    fresh.images.remove(name)
    assert fresh.images.list() == [] and ix["host"] in store.load_refs()["indexes"]
    assert fresh.images.pull(name).record.manifest_digest == ix["host"]
    assert ix["host"] not in store.load_refs().get("indexes", {})
    store.gc()
    assert not store.has_blob(ix["other_layer"]) and not store.has_blob(ix["index"])
    # Pinned by the index's digest: `run` pulls it once, then finds it by that digest.
    pinned = f"{reg.addr}/ix/multi@{ix['index']}"
    pin_root = tmp_path / "pinned"
    for _ in range(2):
        r = pyrun("--root", str(pin_root), "run", "--rm", "--network", "none", pinned)
        assert r.returncode == 0 and r.stdout == "host\n", r.stderr
    assert Client(pin_root).images.get(pinned).record.manifest_digest == ix["host"]
    # The API: images.pull(all_platforms=True), and image copy --all into the store.
    api_img = Client(tmp_path / "api").images.pull(name, all_platforms=True)
    assert api_img.record.manifest_digest == ix["host"]
    r = pyrun("image", "copy", "--all", f"docker://{name}", "copied:1")
    assert r.returncode == 0 and ix["index"] in r.stderr, r.stderr
    assert client.images.get("copied:1").record.manifest_digest == ix["host"]


def put_artifact(
    api: Registry, repo: str, subject: dict[str, Any], artifact_type: str, payload: bytes
) -> dict[str, Any]:
    """An OCI 1.1 artifact manifest (empty config, one layer) whose subject is `subject`."""
    for data in (EMPTY, payload):
        d = oci.sha256_bytes(data)
        if not api.has_blob(repo, d):
            api.upload_blob(repo, d, len(data), data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": oci.descriptor(EMPTY_TYPE, oci.sha256_bytes(EMPTY), len(EMPTY)),
        "layers": [
            oci.descriptor("application/octet-stream", oci.sha256_bytes(payload), len(payload))
        ],
        "subject": subject,
        "annotations": {"org.example.note": artifact_type},
    }
    body = json.dumps(manifest).encode()
    digest = api.put_manifest(repo, oci.sha256_bytes(body), body, oci.OCI_MANIFEST)
    return oci.descriptor(oci.OCI_MANIFEST, digest, len(body))


@needs_root
@needs_tool("docker-registry")
def test_referrers_on_debian_registry_and_copied_with_the_image(
    client: Client, busybox_tar: Path, reg: RegistryProcess, tmp_path: Path, pyrun: PyrunRunner
) -> None:
    """Debian's 2.8 has no referrers API: a signature and an SBOM pushed with `subject` are
    listed in the `sha256-<hex>` fallback tag, which `manifest inspect --referrers` and
    images.referrers read; a signature of the SBOM refers to it. `image copy --referrers`
    carries all three to another repository, into an OCI layout and back out of it."""
    name = f"{reg.addr}/sig/bb:1"
    client.images.import_image(busybox_tar, name)
    digest = client.images.push(name)
    size = client.store.blob_path(digest).stat().st_size
    subject = oci.descriptor(oci.OCI_MANIFEST, digest, size)
    api = Registry(reg.addr)
    try:
        sig = put_artifact(api, "sig/bb", subject, "application/vnd.example.sig", b"signed")
        sbom = put_artifact(api, "sig/bb", subject, "application/spdx+json", b'{"spdx":1}')
        sbom_sig = put_artifact(api, "sig/bb", sbom, "application/vnd.example.sig", b"sbom sig")
        fallback = json.loads(api.get_manifest("sig/bb", digest.replace(":", "-"))[0])
        assert [m["digest"] for m in fallback["manifests"]] == [sig["digest"], sbom["digest"]]
        assert fallback["manifests"][0]["artifactType"] == "application/vnd.example.sig"
        # Putting the same artifact again does not list it twice.
        put_artifact(api, "sig/bb", subject, "application/vnd.example.sig", b"signed")
        assert len(api.referrers("sig/bb", digest)) == 2
    finally:
        api.close()

    r = pyrun("manifest", "inspect", "--referrers", name)
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert listing["mediaType"] == oci.OCI_INDEX
    assert {m["digest"] for m in listing["manifests"]} == {sig["digest"], sbom["digest"]}
    r = pyrun("manifest", "inspect", "--referrers", "--artifact-type", "application/spdx+json",
              name)  # fmt: skip
    assert [m["digest"] for m in json.loads(r.stdout)["manifests"]] == [sbom["digest"]]
    got = client.images.referrers(f"{reg.addr}/sig/bb@{sbom['digest']}")
    assert [m["digest"] for m in got] == [sbom_sig["digest"]]
    assert client.images.referrers(f"{reg.addr}/sig/bb@{sig['digest']}") == []

    # Without --referrers nothing but the image goes; with it, every referrer, recursively.
    r = pyrun("image", "copy", f"docker://{name}", f"docker://{reg.addr}/plain/bb:1")
    assert r.returncode == 0 and client.images.referrers(f"{reg.addr}/plain/bb:1") == []
    r = pyrun("image", "copy", "--referrers", f"docker://{name}", f"docker://{reg.addr}/copy/bb:1")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("referrer of") == 3, r.stderr
    assert {m["digest"] for m in client.images.referrers(f"{reg.addr}/copy/bb:1")} == {
        sig["digest"], sbom["digest"]}  # fmt: skip
    assert [m["digest"] for m in client.images.referrers(
        f"{reg.addr}/copy/bb@{sbom['digest']}")] == [sbom_sig["digest"]]  # fmt: skip

    layout = tmp_path / "layout"
    r = pyrun("image", "copy", "--referrers", f"docker://{name}", f"oci:{layout}:1")
    assert r.returncode == 0, r.stderr
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    assert len(entries) == 4 and sum("annotations" in e for e in entries) == 1
    r = pyrun("image", "copy", "--referrers", f"oci:{layout}:1", f"docker://{reg.addr}/back/bb:1")
    assert r.returncode == 0 and r.stderr.count("referrer of") == 3, r.stderr
    assert len(client.images.referrers(f"{reg.addr}/back/bb:1")) == 2
    r = pyrun("image", "copy", f"oci:{layout}:1", "fromlayout:1")  # referrers do not get in the way
    assert r.returncode == 0, r.stderr
    line = one_line(pyrun("image", "copy", "--referrers", f"docker://{name}", "local:1"))
    assert "does not keep referrers" in line


class _ReferrersAPI(http.server.BaseHTTPRequestHandler):
    """A registry with the referrers API: two pages (Link), artifactType filtering applied
    (OCI-Filters-Applied), and the OCI-Subject header on a manifest PUT."""

    seen: ClassVar[list[str]] = []
    first: ClassVar[dict[str, Any]] = {"digest": "sha256:" + "1" * 64, "artifactType": "a/sig"}
    second: ClassVar[dict[str, Any]] = {"digest": "sha256:" + "2" * 64, "artifactType": "a/sbom"}

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        type(self).seen.append(f"GET {self.path}")
        page = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX}
        if "artifactType=a%2Fsbom" in self.path:
            body = json.dumps({**page, "manifests": [self.second]}).encode()
            self._send(200, body, {"Content-Type": oci.OCI_INDEX,
                                   "OCI-Filters-Applied": "artifactType"})  # fmt: skip
        elif self.path.endswith("?page=2"):
            self._send(200, json.dumps({**page, "manifests": [self.second]}).encode(),
                       {"Content-Type": oci.OCI_INDEX})  # fmt: skip
        elif "/referrers/" in self.path:
            self._send(200, json.dumps({**page, "manifests": [self.first]}).encode(),
                       {"Content-Type": oci.OCI_INDEX,
                        "Link": f'<{self.path}?page=2>; rel="next"'})  # fmt: skip
        else:
            self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {})

    def do_PUT(self) -> None:
        type(self).seen.append(f"PUT {self.path}")
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(201, b"", {"OCI-Subject": "sha256:" + "3" * 64})

    def log_message(self, *args: object) -> None:
        pass


def test_referrers_api_paginated_filtered_and_oci_subject() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReferrersAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = Registry(f"127.0.0.1:{server.server_address[1]}")
    subject = "sha256:" + "3" * 64
    try:
        got = api.referrers("r/x", subject)
        assert got == [_ReferrersAPI.first, _ReferrersAPI.second]
        assert api.referrers("r/x", subject, "a/sbom") == [_ReferrersAPI.second]
        # Filtering where the registry did not: done here.
        assert [m["digest"] for m in api.referrers("r/x", subject, "a/sig")] == [
            _ReferrersAPI.first["digest"]]  # fmt: skip
        _ReferrersAPI.seen.clear()
        body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                           "config": {"digest": "sha256:" + "4" * 64}, "layers": [],
                           "subject": {"digest": subject}}).encode()  # fmt: skip
        api.put_manifest("r/x", oci.sha256_bytes(body), body, oci.OCI_MANIFEST)
        # The registry said OCI-Subject: no fallback tag is read or written.
        assert _ReferrersAPI.seen == [f"PUT /v2/r/x/manifests/{oci.sha256_bytes(body)}"]
    finally:
        api.close()
        server.shutdown()
        server.server_close()
