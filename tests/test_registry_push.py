"""Ship, the push side: cross-repository mounts, a chunk cut in the middle (resumed from the
session's Range, or a new session where the registry cannot), a token that expires in the
middle of an upload (a real `auth: token` registry and a token server signing JWTs with a key
the test makes), tag listing and delete, and an OCI index pushed whole."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from helpers import PyrunRunner, needs_root, needs_tool
from pyrun.client import Client
from test_registry import FaultyProxy
from test_registry_faults import RegistryProcess

pytestmark = [needs_root, needs_tool("docker-registry")]


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[RegistryProcess]:
    r = RegistryProcess(tmp_path / "registry")
    yield r
    r.kill()


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:ship", changes=['CMD ["echo", "shipped"]'])
    return client


def lines(proxy: FaultyProxy) -> list[str]:
    with proxy.lock:
        return [r.splitlines()[0] for r in proxy.requests]


def test_cross_repository_mount(bb: Client, reg: RegistryProcess, tmp_path: Path) -> None:
    proxy = FaultyProxy(reg.addr)
    try:
        host = proxy.addr
        layer = bb.images.get("bb:ship").record.layers[0]["digest"]
        hexd = layer.split(":")[1]  # as it appears in a URL (quoted digest)
        bb.images.get("bb:ship").tag(f"{host}/a/bb", "1")
        bb.images.push(f"{host}/a/bb:1")
        assert any(ln.startswith("PUT ") and hexd in ln for ln in lines(proxy))

        # Pushed to a/bb before: the push to b/bb mounts the layer instead of uploading it.
        proxy.requests.clear()
        bb.images.get("bb:ship").tag(f"{host}/b/bb", "1")
        bb.images.push(f"{host}/b/bb:1")
        seen = lines(proxy)
        assert any(
            ln.startswith("POST /v2/b/bb/blobs/uploads/?mount=") and "from=a%2Fbb" in ln
            for ln in seen
        ), seen
        assert not any(ln.startswith(("PUT ", "PATCH ")) and hexd in ln for ln in seen), seen
        config = bb.images.get("bb:ship").record.config_digest.split(":")[1]
        assert any("?mount=" in ln and config in ln for ln in seen), seen
        assert not any(ln.startswith("PUT /v2/b/bb/blobs/uploads/") for ln in seen), seen

        # Pulled from a repository counts too: a fresh store pulls b/bb, pushes to d/bb.
        fresh = Client(tmp_path / "fresh")
        fresh.images.pull(f"{host}/b/bb:1")
        fresh.images.get(f"{host}/b/bb:1").tag(f"{host}/d/bb", "1")
        proxy.requests.clear()
        fresh.images.push(f"{host}/d/bb:1")
        seen = lines(proxy)
        assert any("/v2/d/bb/blobs/uploads/?mount=" in ln and "from=b%2Fbb" in ln for ln in seen)
        assert not any(ln.startswith(("PUT ", "PATCH ")) and hexd in ln for ln in seen), seen

        # A source that lacks the blob: the registry answers 202 with an upload session, and
        # the layer goes up into that session.
        origins = json.loads((tmp_path / "fresh" / "registry-origins.json").read_text())
        origins[layer] = [f"{host}/nowhere/x"]
        (tmp_path / "fresh" / "registry-origins.json").write_text(json.dumps(origins))
        fresh.images.get(f"{host}/b/bb:1").tag(f"{host}/e/bb", "1")
        proxy.requests.clear()
        fresh.images.push(f"{host}/e/bb:1")
        seen = lines(proxy)
        assert any(
            "/v2/e/bb/blobs/uploads/?mount=" in ln and "from=nowhere%2Fx" in ln for ln in seen
        )
        assert any(ln.startswith("PUT /v2/e/bb/blobs/uploads/") and hexd in ln for ln in seen)

        for repo in ("b", "d", "e"):
            other = Client(tmp_path / f"check-{repo}")
            assert other.containers.run(f"{reg.addr}/{repo}/bb:1", remove=True) == b"shipped\n"
    finally:
        proxy.close()


class CutPatchProxy(FaultyProxy):
    """Forwards everything, but the `nth` PATCH is cut after half its body: both sides of
    that connection are shut down (the registry sees a client gone mid-chunk)."""

    def __init__(self, upstream: str, nth: int) -> None:
        self.nth = nth
        self.patches = 0
        super().__init__(upstream)

    def _serve(self, client: socket.socket) -> None:
        host, port = self.upstream.split(":")
        try:
            up = socket.create_connection((host, int(port)))
        except OSError:  # the registry is gone (stopped, or its test over)
            client.close()
            return

        def down() -> None:
            try:
                while data := up.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()

        threading.Thread(target=down, daemon=True).start()
        budget = -1  # bytes of this request still to forward before the cut; -1: no cut
        try:
            while data := client.recv(65536):
                if data[:6] == b"PATCH " or data[:4] in (b"GET ", b"PUT ", b"POST", b"HEAD"):
                    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
                    with self.lock:
                        self.requests.append(head)
                        if data[:6] == b"PATCH ":
                            self.patches += 1
                            if self.patches == self.nth:
                                length = int(
                                    next(
                                        ln.split(":", 1)[1]
                                        for ln in head.lower().splitlines()
                                        if ln.startswith("content-length:")
                                    )
                                )
                                budget = len(head) + 4 + length // 2
                if budget >= 0:
                    up.sendall(data[:budget])
                    budget -= min(budget, len(data))
                    if budget == 0:
                        import time

                        time.sleep(0.3)  # let the registry store what it got
                        for s in (up, client):
                            with contextlib.suppress(OSError):
                                s.shutdown(socket.SHUT_RDWR)
                        return
                    continue
                up.sendall(data)
        except OSError:
            pass
        finally:
            up.close()


def test_chunk_cut_mid_way_on_debian_registry(
    bb: Client, reg: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's 2.8 keeps the half chunk it got, then refuses the session's old state (the
    retried PATCH and the status GET): the client asks where the session stands, and, refused,
    starts a new session from byte 0. The blob the registry assembles is right."""
    monkeypatch.setenv("PYRUN_UPLOAD_CHUNK", str(256 * 1024))
    proxy = CutPatchProxy(reg.addr, nth=2)
    try:
        name = f"{proxy.addr}/cut/bb:1"
        bb.images.get("bb:ship").tag(f"{proxy.addr}/cut/bb", "1")
        bb.images.push(name)
        seen = lines(proxy)
        verbs = [ln.split(" ")[0] for ln in seen]
        get = next(i for i, ln in enumerate(seen) if ln.startswith("GET /v2/cut/bb/blobs/uploads/"))
        assert verbs[get - 2 : get] == ["PATCH", "PATCH"] and "POST" in verbs[get:], seen
        fresh = Client(tmp_path / "fresh")
        assert fresh.containers.run(f"{reg.addr}/cut/bb:1", remove=True) == b"shipped\n"
    finally:
        proxy.close()


class _SpecUploads(http.server.BaseHTTPRequestHandler):
    """Blob upload sessions as the spec has them (Content-Range checked, 416 out of order,
    status GET with Range), the second PATCH cut after half its body: what Debian's 2.8
    cannot show (it refuses the session after a cut)."""

    protocol_version = "HTTP/1.1"
    data = bytearray()
    log: ClassVar[list[str]] = []
    patches = 0
    done: ClassVar[dict[str, bytes]] = {}

    def _reply(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in {"Content-Length": "0", **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()

    def _range(self) -> dict[str, str]:
        n = len(type(self).data)
        return {"Location": "/up/1", "Range": f"0-{n - 1}" if n else "0-0"}

    def do_POST(self) -> None:
        type(self).log.append(f"POST {self.path}")
        type(self).data = bytearray()
        self._reply(202, {"Location": "/up/1"})

    def do_PATCH(self) -> None:
        cls = type(self)
        crange = self.headers["Content-Range"]
        cls.log.append(f"PATCH {crange}")
        length = int(self.headers["Content-Length"])
        start = int(crange.split("-")[0])
        if start != len(cls.data):
            self.rfile.read(length)
            self._reply(416, self._range())
            return
        cls.patches += 1
        if cls.patches == 2:  # the connection dies half-way through this chunk
            cls.data += self.rfile.read(length // 2)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        cls.data += self.rfile.read(length)
        self._reply(202, self._range())

    def do_GET(self) -> None:
        type(self).log.append(f"GET {self.path}")
        self._reply(204, self._range())

    def do_PUT(self) -> None:
        cls = type(self)
        cls.log.append(f"PUT {self.path}")
        cls.data += self.rfile.read(int(self.headers.get("Content-Length") or 0))
        digest = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["digest"][0]
        if hashlib.sha256(cls.data).hexdigest() != digest.split(":")[1]:
            self._reply(400)
            return
        cls.done[digest] = bytes(cls.data)
        self._reply(201)

    def log_message(self, *args: object) -> None:
        pass


def test_chunk_resume_from_the_session_range(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyrun.registry.client import Registry

    monkeypatch.setenv("PYRUN_UPLOAD_CHUNK", str(64 * 1024))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SpecUploads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    blob = os.urandom(300 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    reg = Registry(f"127.0.0.1:{server.server_address[1]}")
    try:
        reg.upload_blob("x/y", digest, len(blob), io.BytesIO(blob))
    finally:
        reg.close()
        server.shutdown()
        server.server_close()
    assert _SpecUploads.done[digest] == blob
    log = _SpecUploads.log
    half = 64 * 1024 + 32 * 1024
    # The cut chunk is sent again (refused: the session has more), the status GET says where
    # it stands, and the upload goes on from that byte, in the same session.
    assert log[:6] == [
        "POST /v2/x/y/blobs/uploads/", "PATCH 0-65535", "PATCH 65536-131071",
        "PATCH 65536-131071", "GET /up/1", f"PATCH {half}-{half + 65535}",
    ], log  # fmt: skip
    assert log.count("POST /v2/x/y/blobs/uploads/") == 1 and log[-1].startswith("PUT /up/1?digest=")


class _MinChunkUploads(_SpecUploads):
    """The same sessions, never cut, asking for chunks of at least 100000 bytes."""

    log: ClassVar[list[str]] = []
    patches = -1000

    def do_POST(self) -> None:
        type(self).log.append(f"POST {self.path}")
        type(self).data = bytearray()
        self._reply(202, {"Location": "/up/1", "OCI-Chunk-Min-Length": "100000"})


def test_chunks_honour_oci_chunk_min_length(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyrun.registry.client import Registry

    monkeypatch.setenv("PYRUN_UPLOAD_CHUNK", str(64 * 1024))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MinChunkUploads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    blob = os.urandom(250 * 1000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    reg = Registry(f"127.0.0.1:{server.server_address[1]}")
    try:
        reg.upload_blob("x/y", digest, len(blob), io.BytesIO(blob))
    finally:
        reg.close()
        server.shutdown()
        server.server_close()
    assert _MinChunkUploads.done[digest] == blob
    patches = [ln for ln in _MinChunkUploads.log if ln.startswith("PATCH")]
    assert patches == ["PATCH 0-99999", "PATCH 100000-199999", "PATCH 200000-249999"], patches


class _JWTServer(http.server.BaseHTTPRequestHandler):
    """A token server for the registry's `auth: token` mode: RS256 JWTs signed (with the
    openssl CLI) by a key whose self-signed certificate is the registry's root bundle, for
    whatever the scope asks. Tokens really live `life` seconds (the registry allows 60 s of
    clock skew past `exp`), while `expires_in` claims 300: the client learns of the expiry
    from a 401, as it does when a registry revokes a token or clocks disagree."""

    key = ""
    cert_der = b""
    life = 2.0
    claimed = 300  # the expires_in it tells clients
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        cls = type(self)
        cls.seen.append(self.path)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": "pyrun-test-issuer", "sub": "", "aud": q.get("service", [""])[0],
            "exp": now - 60 + int(cls.life), "nbf": now - 1, "iat": now,
            "jti": os.urandom(8).hex(), "access": access,
        }  # fmt: skip
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cls.cert_der).decode()]}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", cls.key],
                             input=signing.encode(), capture_output=True, check=True).stdout  # fmt: skip
        body = json.dumps({"token": f"{signing}.{_b64(sig)}", "expires_in": cls.claimed}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DelayProxy(FaultyProxy):
    """Holds the first request whose first line contains `pattern` for `delay` seconds."""

    def __init__(self, upstream: str, pattern: str, delay: float) -> None:
        self.pattern = pattern
        self.delay = delay
        super().__init__(upstream)

    def _serve(self, client: socket.socket) -> None:
        host, port = self.upstream.split(":")
        try:
            up = socket.create_connection((host, int(port)))
        except OSError:  # the registry is gone (stopped, or its test over)
            client.close()
            return

        def down() -> None:
            try:
                while data := up.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()

        threading.Thread(target=down, daemon=True).start()
        try:
            while data := client.recv(65536):
                if data[:4] in (b"GET ", b"PUT ", b"POST", b"HEAD", b"PATC"):
                    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
                    with self.lock:
                        self.requests.append(head)
                        hold = bool(self.pattern) and self.pattern in head.splitlines()[0]
                        if hold:
                            self.pattern = ""
                    if hold:
                        time.sleep(self.delay)
                up.sendall(data)
        except OSError:
            pass
        finally:
            up.close()


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    d = tmp_path / "tokenreg"
    d.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=pyrun-test-token", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        capture_output=True, check=True,
    )  # fmt: skip
    der = subprocess.run(["openssl", "x509", "-in", str(d / "cert.pem"), "-outform", "DER"],
                         capture_output=True, check=True).stdout  # fmt: skip
    _JWTServer.key, _JWTServer.cert_der, _JWTServer.seen = str(d / "key.pem"), der, []
    _JWTServer.claimed = 300
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JWTServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    reg = RegistryProcess(
        d,
        f"auth: {{token: {{realm: {realm}, service: test-registry, issuer: pyrun-test-issuer,"
        f" rootcertbundle: {d}/cert.pem}}}}\n",
    )
    try:
        yield reg
    finally:
        reg.kill()
        server.shutdown()
        server.server_close()


def test_token_expires_in_the_middle_of_uploads(
    bb: Client, token_registry: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens that die after 2 s: a chunked (seekable) upload whose later PATCH is held 3 s
    gets a 401 and sends that chunk again with a fresh token; a streamed (not seekable) layer,
    from an OCI archive, whose PUT is held 3 s is re-opened and sent again in a new session."""
    reg = token_registry
    monkeypatch.setenv("PYRUN_UPLOAD_CHUNK", str(256 * 1024))
    proxy = DelayProxy(reg.addr, "PATCH ", 0)
    try:
        # The held PATCH: the third of the layer's chunks.
        with proxy.lock:
            proxy.pattern, proxy.delay = "", 0.0
        name = f"{proxy.addr}/tok/bb:1"
        bb.images.get("bb:ship").tag(f"{proxy.addr}/tok/bb", "1")
        patches = 0

        def hold_third_patch() -> None:
            nonlocal patches
            while True:
                with proxy.lock:
                    n = sum(r.startswith("PATCH ") for r in proxy.requests)
                    if n >= 2:
                        proxy.pattern, proxy.delay = "PATCH ", 3.0
                        return
                time.sleep(0.002)

        t = threading.Thread(target=hold_third_patch, daemon=True)
        t.start()
        tokens_before = len(_JWTServer.seen)
        bb.images.push(name)
        t.join()
        seen = lines(proxy)
        # A PATCH answered 401, then the same chunk again (same Content-Range) after a new token.
        ranges = [
            next(h for h in r.lower().splitlines() if h.startswith("content-range:"))
            for r in proxy.requests
            if r.startswith("PATCH ")
        ]
        assert len(ranges) > len(set(ranges)), seen
        assert len(_JWTServer.seen) > tokens_before + 1, _JWTServer.seen

        # The streamed layer: a blob inside an OCI archive (a window on the tar, not seekable)
        # goes up in one PUT.
        layout = tmp_path / "layout.tar"
        bb.images.copy("bb:ship", f"oci-archive:{layout}:1")
        monkeypatch.setenv("PYRUN_UPLOAD_CHUNK", str(64 << 20))
        (bb.store.root / "registry-origins.json").unlink()  # no mount from tok/bb: upload
        with proxy.lock:
            proxy.requests.clear()
            proxy.pattern, proxy.delay = "PUT /v2/stream/bb/blobs/uploads/", 3.0
        bb.images.copy(f"oci-archive:{layout}:1", f"docker://{proxy.addr}/stream/bb:1")
        seen = lines(proxy)
        layer = bb.images.get("bb:ship").record.layers[0]["digest"].split(":")[1]
        puts = [
            ln for ln in seen if ln.startswith("PUT /v2/stream/bb/blobs/uploads/") and layer in ln
        ]
        assert len(puts) == 2 and puts[0].split("?")[0] != puts[1].split("?")[0], seen

        fresh = Client(tmp_path / "fresh")
        for repo in ("tok", "stream"):
            assert fresh.containers.run(f"{proxy.addr}/{repo}/bb:1", remove=True) == b"shipped\n"
    finally:
        proxy.close()


def test_tags_and_delete_on_debian_registry(
    bb: Client, reg: RegistryProcess, tmp_path: Path, pyrun: PyrunRunner
) -> None:
    """Debian's 2.8 quirks: tags/list ignores n and last and answers unsorted (the client
    sorts, and stops when a page brings nothing new); DELETE by tag is DIGEST_INVALID (the
    client resolves the tag and deletes by digest)."""
    from pyrun.registry.client import Registry

    repo = f"{reg.addr}/tags/bb"
    for t in ("zeta", "alpha", "1.0", "mid", "beta"):
        bb.images.get("bb:ship").tag(repo, t)
        bb.images.push(f"{repo}:{t}")
    other = bb.containers.run("bb:ship", ["sh", "-c", "echo x > /x"], detach=True)
    other.wait()
    other.commit(repo, "other")
    bb.images.push(f"{repo}:other")
    want = sorted(["zeta", "alpha", "1.0", "mid", "beta", "other"])
    proxy = FaultyProxy(reg.addr)
    api = Registry(proxy.addr)
    try:
        assert api.tags("tags/bb", page_size=2) == want
        assert any("/tags/list?n=2" in ln for ln in lines(proxy))
    finally:
        api.close()
        proxy.close()
    r = pyrun("image", "tags", repo)
    assert r.returncode == 0 and r.stdout.split() == want, r.stderr
    r = pyrun("image", "tags", "--format", "json", repo)
    assert json.loads(r.stdout) == {"Repository": repo, "Tags": want}
    assert bb.images.list_tags(repo) == want

    # Delete by tag: the manifest goes, with every tag that points at it.
    digest = bb.images.get(f"{repo}:zeta").record.manifest_digest
    r = pyrun("manifest", "rm", f"{repo}:zeta")
    assert r.returncode == 0 and r.stdout.strip() == f"Deleted: {repo}@{digest}", r.stderr
    assert bb.images.list_tags(repo) == ["other"]
    r = pyrun("pull", f"{repo}:alpha")
    assert r.returncode == 1 and "MANIFEST_UNKNOWN" in r.stderr
    assert (
        bb.images.delete_remote(f"{repo}:other")
        == bb.images.get(f"{repo}:other").record.manifest_digest
    )
    r = pyrun("manifest", "rm", f"{repo}:other")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "HTTP 404" in r.stderr


def test_delete_refused_is_one_line(bb: Client, tmp_path: Path, pyrun: PyrunRunner) -> None:
    reg = RegistryProcess(tmp_path / "nodelete")
    cfg = tmp_path / "nodelete" / "config.yml"
    cfg.write_text(cfg.read_text().replace("delete: {enabled: true}", "delete: {enabled: false}"))
    reg.kill()
    reg.start()
    try:
        bb.images.get("bb:ship").tag(f"{reg.addr}/keep/bb", "1")
        bb.images.push(f"{reg.addr}/keep/bb:1")
        r = pyrun("manifest", "rm", f"{reg.addr}/keep/bb:1")
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "does not allow deletes" in r.stderr and "HTTP 405" in r.stderr, r.stderr
    finally:
        reg.kill()


class _PagedTags(http.server.BaseHTTPRequestHandler):
    """tags/list as the spec has it: `n` per page, lexical order, a Link to the next page."""

    protocol_version = "HTTP/1.1"
    tags: ClassVar[list[str]] = sorted(f"t{i:03d}" for i in range(7))
    log: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).log.append(self.path)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        n = int(q.get("n", ["100"])[0])
        last = q.get("last", [""])[0]
        rest = [t for t in self.tags if t > last]
        page = rest[:n]
        body = json.dumps({"name": "p/q", "tags": page}).encode()
        self.send_response(200)
        if len(rest) > n:
            self.send_header("Link", f'</v2/p/q/tags/list?n={n}&last={page[-1]}>; rel="next"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_tag_pagination_follows_link() -> None:
    from pyrun.registry.client import Registry

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PagedTags)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = Registry(f"127.0.0.1:{server.server_address[1]}")
    try:
        assert api.tags("p/q", page_size=3) == _PagedTags.tags
    finally:
        api.close()
        server.shutdown()
        server.server_close()
    assert _PagedTags.log == [
        "/v2/p/q/tags/list?n=3", "/v2/p/q/tags/list?n=3&last=t002", "/v2/p/q/tags/list?n=3&last=t005"
    ]  # fmt: skip


def _under_pty(args: list[str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal: (exit status, stdout, what the terminal got)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    got = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed
            break
        if not data:
            break
        got += data
    os.close(master)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read()
    return proc.wait(60), out, got.decode(errors="replace")


def test_progress_bars_on_a_terminal_plain_lines_otherwise(
    bb: Client, reg: RegistryProcess, tmp_path: Path, store_root: Path
) -> None:
    import sys

    c = bb.containers.run("bb:ship", ["sh", "-c", "head -c 3000000 /dev/urandom > /r"], detach=True)
    c.wait()
    name = f"{reg.addr}/prog/bb:1"
    c.commit(f"{reg.addr}/prog/bb", "1")
    keys = [d["digest"][7:19] for d in bb.images.get(name).record.layers]
    cli = [sys.executable, "-m", "pyrun.cli", "--root", str(store_root)]

    rc, out, tty = _under_pty([*cli, "push", name])
    assert rc == 0, tty
    assert "\x1b[" in tty and "Pushing [" in tty, tty
    for k in keys:
        assert f"{k}: Pushed" in tty, tty
    assert out.startswith("1: digest: sha256:")

    fresh = [sys.executable, "-m", "pyrun.cli", "--root", str(tmp_path / "fresh")]
    rc, out, tty = _under_pty([*fresh, "pull", name])
    assert rc == 0, tty
    assert "Downloading [" in tty and "\x1b[2K" in tty, tty
    final = tty.rsplit("\x1b[2K", len(keys))[-len(keys) :]  # the last drawing of the rows
    assert sorted(r.strip() for r in final) == sorted(f"{k}: Pull complete" for k in keys), tty
    assert "Digest: sha256:" in out and "\x1b" not in out
    rc, out, tty = _under_pty([*fresh, "pull", name])  # nothing to fetch
    assert rc == 0 and all(f"{k}: Already exists" in tty for k in keys), tty

    # Not a terminal: plain lines, no escapes; -q: nothing but the name.
    r = subprocess.run([*cli, "push", name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr
    assert [ln.split(": ")[1] for ln in r.stdout.splitlines()[:-1]] == ["already exists"] * 2
    other = [sys.executable, "-m", "pyrun.cli", "--root", str(tmp_path / "other")]
    r = subprocess.run([*other, "pull", name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr
    assert sorted(ln for ln in r.stdout.splitlines() if "copied" in ln) == sorted(
        f"{k}: copied {d['size']} bytes"
        for k, d in zip(keys, bb.images.get(name).record.layers, strict=True)
    )
    rc, out, tty = _under_pty([*other, "pull", "-q", name])
    assert rc == 0 and tty == "" and out == f"{name}\n"
    # The bars' code is imported by pull/push on a terminal only.
    for args in (["pull", name], ["images"]):
        r = subprocess.run([sys.executable, "-X", "importtime", *other[1:], *args],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0 and "pyrun.cli" in r.stderr
        assert "pyrun.progress" not in r.stderr


def test_multi_arch_index_pushed_whole(
    client: Client, busybox_tar: Path, reg: RegistryProcess, tmp_path: Path, pyrun: PyrunRunner
) -> None:
    """An OCI layout whose tag names an index of two platforms: `image copy oci:DIR:TAG
    docker://…` pushes both images (by digest) and the index (by tag); a registry-to-registry
    copy of that index copies it whole again (its layers mounted: same registry); pulls pick
    by --platform; skopeo sees the index."""
    from pyrun import oci
    from pyrun.registry.client import Registry

    layout = tmp_path / "layout"
    descs = []
    for arch in ("amd64", "arm64"):
        img = client.images.import_image(
            busybox_tar,
            f"ma/bb:{arch}",
            platform=f"linux/{arch}",
            changes=[f'CMD ["echo", "{arch}"]'],
        )
        client.images.copy(f"ma/bb:{arch}", f"oci:{layout}:{arch}")
        data = client.store.read_blob(img.record.manifest_digest)
        descs.append(oci.descriptor(oci.OCI_MANIFEST, img.record.manifest_digest, len(data),
                                    platform={"os": "linux", "architecture": arch}))  # fmt: skip
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": descs}
    ).encode()
    idigest = oci.sha256_bytes(index)
    (layout / "blobs" / "sha256" / idigest.split(":")[1]).write_bytes(index)
    entry = oci.descriptor(oci.OCI_INDEX, idigest, len(index))
    entry["annotations"] = {oci.REF_NAME_ANNOTATION: "multi"}
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [entry]})
    )

    r = pyrun("image", "copy", f"oci:{layout}:multi", f"docker://{reg.addr}/ma/bb:1")
    assert r.returncode == 0 and idigest in r.stderr, r.stderr
    api = Registry(reg.addr)
    try:
        data, media_type, digest = api.get_manifest("ma/bb", "1")
        assert (data, media_type, digest) == (index, oci.OCI_INDEX, idigest)
        for d in descs:
            assert api.get_manifest("ma/bb", d["digest"])[2] == d["digest"]
    finally:
        api.close()

    proxy = FaultyProxy(reg.addr)
    try:
        r = pyrun(
            "image", "copy", f"docker://{proxy.addr}/ma/bb:1", f"docker://{proxy.addr}/ma2/bb:1"
        )
        assert r.returncode == 0, r.stderr
        seen = lines(proxy)
        assert any("/v2/ma2/bb/blobs/uploads/?mount=" in ln and "from=ma%2Fbb" in ln for ln in seen)
        puts = sorted(ln.split(" ")[1] for ln in seen if ln.startswith("PUT /v2/ma2/bb/manifests/"))
        assert puts == sorted(["/v2/ma2/bb/manifests/1"] + [
            f"/v2/ma2/bb/manifests/{d['digest']}" for d in descs
        ]), seen  # fmt: skip
    finally:
        proxy.close()
    # Registry to OCI layout: the index again, whole (its images as blobs, one index entry).
    back = tmp_path / "back"
    r = pyrun("image", "copy", f"docker://{reg.addr}/ma2/bb:1", f"oci:{back}:multi")
    assert r.returncode == 0 and idigest in r.stderr, r.stderr
    (entry,) = json.loads((back / "index.json").read_text())["manifests"]
    assert entry["digest"] == idigest and entry["mediaType"] == oci.OCI_INDEX
    assert entry["annotations"] == {oci.REF_NAME_ANNOTATION: "multi"}
    for d in descs:
        assert (back / "blobs" / "sha256" / d["digest"].split(":")[1]).is_file()
    r = pyrun("image", "copy", "--platform", "linux/arm64", f"oci:{back}:multi", "arm:1")
    assert r.returncode == 0, r.stderr
    assert client.images.get("arm:1").record.manifest_digest == descs[1]["digest"]

    fresh = Client(tmp_path / "fresh")
    for repo in ("ma", "ma2"):
        for arch in ("amd64", "arm64"):  # (both hold this host's busybox: the CMD tells them apart)
            name = f"{reg.addr}/{repo}/bb:1"
            img = fresh.images.pull(name, platform=f"linux/{arch}")
            assert img.attrs["Architecture"] == arch
            assert fresh.containers.run(name, remove=True) == f"{arch}\n".encode()
    if shutil.which("skopeo"):
        for spec in (
            [f"docker://{reg.addr}/ma2/bb:1", "--tls-verify=false"],
            [f"oci:{back}:multi"],
        ):
            out = subprocess.run(["skopeo", "inspect", "--raw", *spec],
                                 capture_output=True, check=True).stdout  # fmt: skip
            assert oci.sha256_bytes(out) == idigest


def test_token_renewed_before_it_expires(bb: Client, token_registry: RegistryProcess) -> None:
    """A token server that tells the truth (expires_in 2): the client renews the token before
    a request that would carry an expired one, so the registry never answers 401 to it."""
    from pyrun.registry.client import Registry

    _JWTServer.claimed = 2
    proxy = FaultyProxy(token_registry.addr)
    api = Registry(proxy.addr)
    digest = bb.images.get("bb:ship").record.layers[0]["digest"]
    try:
        assert api.has_blob("renew/bb", digest) is False  # 401, token, HEAD again
        heads = sum(ln.startswith("HEAD ") for ln in lines(proxy))
        tokens = len(_JWTServer.seen)
        assert heads == 2 and tokens == 1
        assert api.has_blob("renew/bb", digest) is False  # fresh: sent once
        time.sleep(2.5)
        assert api.has_blob("renew/bb", digest) is False  # renewed first, then sent once
        assert sum(ln.startswith("HEAD ") for ln in lines(proxy)) == heads + 2
        assert len(_JWTServer.seen) == tokens + 1
    finally:
        api.close()
        proxy.close()
