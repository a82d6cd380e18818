"""The distribution client against small HTTP servers playing the parts real registries play
where Debian's registry cannot: a token server that wants the user's credentials (Basic, from
config.json) for a Bearer token, blob downloads redirected to another host (object storage)
that must not see the registry's Authorization, and a redirect chain that ends."""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote

import pytest

from pyrun import oci
from pyrun.registry.client import Registry, RegistryError, Unauthorized

BLOB = b"layer bytes " * 1000
DIGEST = oci.sha256_bytes(BLOB)


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str | None]]] = []  # (server, path, Authorization)
    name = ""
    storage = ""  # host:port of the storage server
    token_url = ""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        type(self).seen.append((self.name, self.path, auth))
        self.route(auth)


class _Token(_Handler):
    name = "token"

    def route(self, auth: str | None) -> None:
        want = "Basic " + base64.b64encode(b"alice:s3cret").decode()
        if auth != want:
            self._send(401, b"bad credentials")
            return
        self._send(200, json.dumps({"access_token": "tok-abc", "expires_in": 300}).encode())

    def do_POST(self) -> None:  # OAuth2: the refresh_token grant of an identity token
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        type(self).seen.append((self.name, "POST " + self.path, json.dumps(form, sort_keys=True)))
        if form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == ["idt-1"]:
            self._send(200, json.dumps({"access_token": "tok-abc", "expires_in": 300}).encode())
        else:
            self._send(401, b"bad grant")


class _Registry(_Handler):
    name = "registry"

    def route(self, auth: str | None) -> None:
        if auth != "Bearer tok-abc":
            challenge = (f'Bearer realm="{self.token_url}",service="fake",'
                         f'scope="repository:r/x:pull"')  # fmt: skip
            self._send(401, b"{}", {"WWW-Authenticate": challenge})
        elif self.path == f"/v2/r/x/blobs/{DIGEST}":
            self._send(307, b"", {"Location": f"http://{self.storage}/bucket/{DIGEST}?sig=1"})
        elif self.path == "/v2/r/x/manifests/warned":  # a registry's Warning headers
            body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST}).encode()
            self.send_response(200)
            self.send_header("Warning", '299 - "this repository is deprecated"')
            self.send_header("Warning", '299 - "quota: 90% used, \\"soon\\" full"')
            self.send_header("Warning", '199 - "not for users"')
            self.send_header("Content-Type", oci.OCI_MANIFEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/v2/r/x/manifests/mismatch":  # Content-Type says another type
            body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST}).encode()
            self._send(200, body, {"Content-Type": oci.DOCKER_MANIFEST})
        elif self.path == "/v2/r/x/blobs/sha256:" + "0" * 64:  # a loop of redirects
            self._send(302, b"", {"Location": f"http://{self.storage}/loop"})
        else:
            self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"nope"}]}')


class _Storage(_Handler):
    name = "storage"

    def route(self, auth: str | None) -> None:
        if self.path.startswith("/loop"):
            self._send(302, b"", {"Location": "/loop"})
        elif self.path == f"/bucket/{DIGEST}?sig=1":
            self._send(200, BLOB)
        else:
            self._send(404)


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    started = []
    addrs = {}
    for cls in (_Token, _Registry, _Storage):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cls)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        addrs[cls.name] = f"127.0.0.1:{srv.server_address[1]}"
    _Handler.storage = addrs["storage"]
    _Handler.token_url = f"http://{addrs['token']}/token"
    _Handler.seen = []
    cfg = tmp_path / "docker"
    cfg.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    (cfg / "config.json").write_text(json.dumps({"auths": {addrs["registry"]: {
        "auth": base64.b64encode(b"alice:s3cret").decode()}}}))  # fmt: skip
    try:
        yield addrs["registry"]
    finally:
        for srv in started:
            srv.shutdown()
            srv.server_close()


def test_token_with_credentials_and_a_redirect_to_storage(servers: str) -> None:
    api = Registry(servers)
    try:
        resp = api.get_blob("r/x", DIGEST)
        assert resp.read() == BLOB
    finally:
        api.close()
    by = {(s, p.split("?")[0]): a for s, p, a in _Handler.seen}
    # The token came with the user's credentials (Basic), for the challenge's scope.
    token_req = next(p for s, p, _ in _Handler.seen if s == "token")
    assert "service=fake" in token_req and "scope=repository%3Ar%2Fx%3Apull" in token_req
    assert by[("token", "/token")] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert by[("registry", f"/v2/r/x/blobs/{DIGEST}")] == "Bearer tok-abc"
    # The storage host, another host, got no Authorization at all.
    assert ("storage", f"/bucket/{DIGEST}") in by and by[("storage", f"/bucket/{DIGEST}")] is None


def test_redirect_loop_and_wrong_credentials_are_errors(
    servers: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Registry(servers)
    try:
        with pytest.raises(RegistryError, match="HTTP 302"):
            api.get_blob("r/x", "sha256:" + "0" * 64)
        with pytest.raises(RegistryError, match=r"HTTP 404 \(BLOB_UNKNOWN: nope\)"):
            api.get_blob("r/x", "sha256:" + "1" * 64)
        with pytest.raises(
            RegistryError, match=r"served as .*docker.* but the manifest says .*oci"
        ):
            api.get_manifest("r/x", "mismatch")
    finally:
        api.close()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {servers: {
        "auth": base64.b64encode(b"alice:wrong").decode()}}}))  # fmt: skip
    api = Registry(servers)
    try:
        with pytest.raises(Unauthorized, match=r"token request to .* failed: HTTP 401"):
            api.get_blob("r/x", DIGEST)
    finally:
        api.close()


class _FlakyUploads(http.server.BaseHTTPRequestHandler):
    """Upload sessions whose first PUT (a streamed blob) is answered 500 after its body."""

    puts: ClassVar[list[str]] = []
    sessions = 0

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        type(self).sessions += 1
        self._send(202, {"Location": f"/v2/r/x/blobs/uploads/s{self.sessions}"})

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).puts.append(self.path)
        ok = len(type(self).puts) > 1 and body == BLOB and DIGEST in unquote(self.path)
        self._send(201 if ok else 500)


def test_a_5xx_to_a_streamed_upload_goes_again_in_a_new_session() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyUploads)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    api = Registry(f"127.0.0.1:{srv.server_address[1]}")
    opened: list[io.BytesIO] = []

    def reopen() -> _Stream:
        opened.append(io.BytesIO(BLOB))
        return _Stream(opened[-1])

    try:
        api.upload_blob("r/x", DIGEST, len(BLOB), reopen(), reopen=reopen)
    finally:
        api.close()
        srv.shutdown()
        srv.server_close()
    paths = [p.split("?")[0] for p in _FlakyUploads.puts]
    assert paths == ["/v2/r/x/blobs/uploads/s1", "/v2/r/x/blobs/uploads/s2"]
    assert len(opened) == 2


class _Stream:
    """A file object that cannot seek (a layer streamed out of an archive)."""

    def __init__(self, f: io.BytesIO) -> None:
        self.f = f

    def read(self, n: int = -1) -> bytes:
        return self.f.read(n)

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.f.close()


def test_identity_token_is_a_refresh_token_grant(servers: str, tmp_path: Path) -> None:
    """An `identitytoken` in config.json (what `docker login` stores for Docker Hub or ACR)
    is sent as OAuth2's refresh_token grant, a form POST, never as Basic credentials."""
    (tmp_path / "docker" / "config.json").write_text(
        json.dumps({"auths": {servers: {"identitytoken": "idt-1"}}})
    )
    api = Registry(servers)
    try:
        assert api.get_blob("r/x", DIGEST).read() == BLOB
    finally:
        api.close()
    (post,) = [(p, a) for s, p, a in _Handler.seen if s == "token"]
    assert post[0] == "POST /token" and post[1] is not None
    form = json.loads(post[1])
    assert form["grant_type"] == ["refresh_token"] and form["service"] == ["fake"]
    assert form["scope"] == ["repository:r/x:pull"] and form["client_id"] == ["pyrun"]


def test_registry_warnings_are_shown_once(servers: str, capsys: pytest.CaptureFixture[str]) -> None:
    api = Registry(servers)
    try:
        for _ in range(2):
            api.get_manifest("r/x", "warned")
    finally:
        api.close()
    assert capsys.readouterr().err.splitlines() == [
        f"Warning: {servers}: this repository is deprecated",
        f'Warning: {servers}: quota: 90% used, "soon" full',
    ]


def test_a_challenge_with_several_scopes_asks_for_all_of_them(servers: str) -> None:
    """A mount's challenge names two repositories, space-separated: the token request repeats
    `scope` once for each (distribution's token.md; what Debian's registry sends)."""
    api = Registry(servers)
    challenge = (f'Bearer realm="{_Handler.token_url}",service="fake",'
                 'scope="repository:r/y:pull,push repository:r/x:pull"')  # fmt: skip
    try:
        api._authenticate(challenge, "repository:r/y:pull,push repository:r/x:pull")
    finally:
        api.close()
    (query,) = [p for s, p, _ in _Handler.seen if s == "token"]
    scopes = urllib.parse.parse_qs(urllib.parse.urlsplit(query).query)["scope"]
    assert scopes == ["repository:r/y:pull,push", "repository:r/x:pull"]
