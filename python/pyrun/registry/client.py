"""An OCI Distribution client on the standard library's http.client (no import cost on the
CLI's other paths): manifests with a complete Accept list, blobs streamed, uploads, and the
auth flows registries use (Bearer tokens from the WWW-Authenticate challenge, anonymous or
with credentials, and Basic), with credentials from ~/.docker/config.json.

TLS with the system CAs by default; plain HTTP for localhost and 127.0.0.0/8 (as Docker
allows) and for hosts named in $PYRUN_INSECURE_REGISTRIES (comma-separated; the CLI's
--insecure-registry). Docker Hub is `docker.io` in names, `registry-1.docker.io` on the wire
($PYRUN_DOCKER_HUB_ENDPOINT replaces it: a mirror, or a local registry in tests) and
`https://index.docker.io/v1/` in config.json."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from pyrun import errors, oci
from pyrun.errors import APIError

ACCEPT = ", ".join([oci.OCI_INDEX, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST_LIST, oci.DOCKER_MANIFEST])
DOCKER_HUB_API = "registry-1.docker.io"
# Docker Hub's key in config.json (docker-py INDEX_URL)
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
IDENTITY_TOKEN_USER = "<token>"  # a helper's Username for an identity token (docker-py)
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")


def upload_chunk_size() -> int:
    """Blobs above this go up in PATCH chunks of this size ($PYRUN_UPLOAD_CHUNK, default
    64 MiB): below it one PUT is fastest, above it proxies' body limits start to bite."""
    try:
        return max(1024, int(os.environ.get("PYRUN_UPLOAD_CHUNK", 64 << 20)))
    except ValueError:
        return 64 << 20


def _with_digest(location: str, digest: str) -> str:
    sep = "&" if urllib.parse.urlsplit(location).query else "?"
    return f"{location}{sep}digest={urllib.parse.quote(digest)}"


class RegistryError(APIError):
    """A registry answered with an error (`status`: its HTTP status), or could not be
    reached (`status` None)."""

    status: int | None = None


class Unauthorized(RegistryError):
    pass


class TransportError(RegistryError):
    """The request or its response was lost on the way (reset, closed, timed out)."""


class StaleAuth(Unauthorized):
    """A 401 for a request whose body was a stream already sent: a fresh token is in place,
    the caller re-opens the body (and the upload session) and sends again."""


class NotFound(RegistryError, errors.NotFound):
    pass


def api_host(domain: str) -> str:
    """The host[:port] the API of registry `domain` answers on."""
    if domain in _HUB_NAMES:
        return os.environ.get("PYRUN_DOCKER_HUB_ENDPOINT", "").strip().rstrip("/") or DOCKER_HUB_API
    return domain


def server_domain(server: str) -> str:
    """A registry as `login`/`logout` or config.json name it (`docker.io`,
    `https://index.docker.io/v1/`, `localhost:5000`, `https://r.example/`) -> its domain."""
    host = server.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if not host:
        raise RegistryError(f"invalid registry address {server!r}")
    return "docker.io" if host in _HUB_NAMES else host


def credential_key(domain: str) -> str:
    """The key a registry's credentials go under in config.json, as Docker writes it."""
    return DOCKER_HUB_KEY if domain in _HUB_NAMES else domain


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in ("localhost", "[::1]") or bool(re.fullmatch(r"127(\.\d{1,3}){3}", name))


def is_insecure(host: str) -> bool:
    """Loopback, or named in $PYRUN_INSECURE_REGISTRIES (--insecure-registry)."""
    if is_loopback(host):
        return True
    extra = os.environ.get("PYRUN_INSECURE_REGISTRIES", "")
    return host in {h.strip() for h in extra.split(",") if h.strip()}


def _docker_config() -> dict[str, Any]:
    path = config_path()
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def config_path() -> str:
    return os.path.join(
        os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json"
    )


def save_credentials(server: str, user: str | None, password: str | None) -> None:
    """Write (or with user None, remove) `auths[server]` in config.json, keeping every other
    key; 0600, temp file + rename."""
    path = config_path()
    cfg = _docker_config()
    auths = cfg.setdefault("auths", {})
    if user is None:
        if server not in auths:
            raise RegistryError(f"not logged in to {server}")
        del auths[server]
    else:
        auths[server] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent="\t")
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def credentials(domain: str) -> tuple[str, str] | None:
    """(user, password) for registry `domain` from config.json: credHelpers, credsStore, then
    auths (Docker's order). Docker Hub's are under https://index.docker.io/v1/."""
    cfg = _docker_config()
    if domain in _HUB_NAMES:
        keys = [DOCKER_HUB_KEY, "index.docker.io", "docker.io", "https://index.docker.io/v1"]
    else:
        keys = [domain, f"https://{domain}", f"http://{domain}"]
    helpers = cfg.get("credHelpers") or {}
    helper = next((helpers[k] for k in keys if k in helpers), None) or cfg.get("credsStore")
    if helper:
        got = _from_helper(str(helper), keys[0])
        if got:
            return got
    auths = cfg.get("auths") or {}
    for k in keys:
        entry = auths.get(k)
        if isinstance(entry, dict) and entry.get("identitytoken"):
            return IDENTITY_TOKEN_USER, str(entry["identitytoken"])
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(
                    f"config.json: auths[{k!r}].auth is not base64 user:pass"
                ) from None
            return user, password
    return None


def _from_helper(helper: str, server: str) -> tuple[str, str] | None:
    """The docker-credential-<helper> protocol: `get` with the server on stdin."""
    import subprocess

    try:
        proc = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=server.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout)
        return str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


class Response:
    """A response whose body is still to be read (streamed)."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection) -> None:
        self.resp = resp
        self.conn = conn
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self.resp.getheader(name)

    def read(self) -> bytes:
        return self.resp.read()

    def close(self) -> None:
        self.resp.close()


class Registry:
    """One registry host. Thread-safe: one connection per thread, tokens shared."""

    def __init__(self, domain: str) -> None:
        self.domain = server_domain(domain)
        self.host = api_host(self.domain)
        # Loopback: plain HTTP. An --insecure-registry: TLS without verification where it
        # speaks TLS, else plain HTTP (Docker's order); found by the first request.
        self.scheme = "http" if is_loopback(self.host) else "https"
        self.verify = not is_insecure(self.host)
        self._probe = not self.verify and self.scheme == "https"
        self._local = threading.local()
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expires at)
        self._challenge: str | None = None
        self._basic: str | None = None
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []
        self._warned: set[str] = set()

    def close(self) -> None:
        """Close every connection (of every thread); a later request opens a new one."""
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()

    # --- connections -----------------------------------------------------------------------
    def _conn(
        self, host: str | None = None, scheme: str | None = None
    ) -> http.client.HTTPConnection:
        host = host or self.host
        scheme = scheme or self.scheme
        key = (scheme, host)
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(key)
        if conn is None:
            if scheme == "https":
                import ssl

                context = ssl.create_default_context()
                if not self.verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                conn = http.client.HTTPSConnection(
                    host, timeout=60, context=context, blocksize=1 << 20
                )
            else:  # 1 MiB blocks: a streamed upload body is read (and counted) in big pieces
                conn = http.client.HTTPConnection(host, timeout=60, blocksize=1 << 20)
            conns[key] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Any = None,
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in range(3):
            conn = self._conn(parts.netloc, parts.scheme)
            try:
                conn.request(method, path, body=body, headers=headers)
                return Response(conn.getresponse(), conn)
            except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as e:
                conn.close()
                # A kept-alive connection the server closed, or a reset: try again (a request
                # whose body is a stream cannot be replayed). Name and refusal errors are final.
                transient = isinstance(
                    e,
                    ConnectionResetError
                    | BrokenPipeError
                    | http.client.RemoteDisconnected
                    | http.client.BadStatusLine
                    | TimeoutError,
                )
                retriable = transient and (body is None or isinstance(body, bytes))
                if attempt == 2 or not retriable:
                    raise TransportError(f"{parts.netloc}: {method} {parts.path}: {e}") from None
        raise AssertionError("unreachable")

    def _probe_scheme(self) -> None:
        """An insecure registry that does not speak TLS (the handshake fails) is plain HTTP."""
        import ssl

        self._probe = False
        conn = self._conn(self.host, "https")
        try:
            conn.connect()
        except ssl.SSLError:
            self.scheme = "http"
        except OSError:
            pass  # unreachable: the request itself says so
        finally:
            conn.close()

    # --- auth ------------------------------------------------------------------------------
    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(scope)
            challenge = self._challenge
            basic = self._basic
        if token is not None and token[1] <= time.monotonic() and challenge:
            # About to expire: a fresh one first (the challenge's realm and service, our scope).
            self._authenticate(re.sub(r',?\s*scope="[^"]*"', "", challenge), scope)
            with self._lock:
                token = self._tokens.get(scope)
        if token is not None:
            return {"Authorization": f"Bearer {token[0]}"}
        if basic:
            return {"Authorization": f"Basic {basic}"}
        return {}

    def forget_token(self, scope: str) -> None:
        """Drop the token for `scope`: the next request gets a 401 and a fresh one."""
        with self._lock:
            self._tokens.pop(scope, None)

    _override: tuple[str, str] | None = None

    def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        creds = self._override or credentials(self.domain)
        if scheme == "basic":
            if creds is None:
                raise Unauthorized(
                    f"{self.host}: authentication required (no credentials for it in "
                    "~/.docker/config.json: pyrun login)"
                )
            with self._lock:
                self._basic = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            return
        if scheme != "bearer" or "realm" not in params:
            raise Unauthorized(f"{self.host}: unsupported auth challenge {challenge!r}")
        query = [("service", params["service"])] if "service" in params else []
        scopes = params.get("scope", scope).split(" ") if params.get("scope") or scope else []
        query += [("scope", s) for s in scopes if s]
        realm = urllib.parse.urlsplit(params["realm"])
        url = params["realm"] + ("&" if realm.query else "?") + urllib.parse.urlencode(query)
        headers = {}
        if creds is not None and creds[0] == IDENTITY_TOKEN_USER:
            # An identity (refresh) token, from `identitytoken` or a helper's `<token>` user:
            # OAuth2's refresh_token grant, a form POST to the realm (distribution's oauth.md).
            form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", creds[1]),
                ("client_id", "pyrun"),
                ("scope", " ".join(s for s in scopes if s)),
            ]
            form += [("service", params["service"])] if "service" in params else []
            resp = self._send("POST", params["realm"], {
                "Content-Type": "application/x-www-form-urlencoded"},
                urllib.parse.urlencode(form).encode())  # fmt: skip
        else:
            if creds is not None:
                basic = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
            resp = self._send("GET", url, headers)
        body = resp.read()
        if resp.status != 200:
            raise Unauthorized(
                f"{self.host}: token request to {realm.netloc} failed: HTTP {resp.status}"
            )
        token: str | None = None
        lifetime = 60.0
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            pass
        if not token:
            raise Unauthorized(f"{self.host}: token server {realm.netloc} returned no token")
        # Renewed 10 s (or a quarter of its life) before it expires.
        expires = time.monotonic() + lifetime - min(10.0, lifetime / 4)
        with self._lock:
            self._tokens[scope] = (str(token), expires)
            self._challenge = challenge

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
        follow: bool = True,
    ) -> Response:
        """`method` on /v2/...; a 401 triggers the auth flow once; redirects are followed
        (Authorization is only sent to the registry's own host)."""
        if self._probe:
            self._probe_scheme()
        url = path if path.startswith("http") else f"{self.scheme}://{self.host}{path}"
        retries = 0
        attempt = 0
        while attempt < 2:
            h = dict(headers or {})
            if urllib.parse.urlsplit(url).netloc == self.host:
                h.update(self._auth_header(scope))
            resp = self._send(method, url, h, body)
            if resp.status == 401 and attempt == 0:
                challenge = resp.header("WWW-Authenticate") or ""
                resp.read()
                self._authenticate(challenge, scope)
                if body is not None and not isinstance(body, bytes) and not _rewind(body):
                    raise StaleAuth(f"{self.host}: {method} {path}: HTTP 401 (token refreshed)")
                attempt += 1
                continue
            if follow and resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                location = resp.header("Location") or ""
                resp.read()
                url = urllib.parse.urljoin(url, location)
                for _ in range(5):
                    resp = self._send(method, url, dict(headers or {}))
                    if resp.status not in (301, 302, 303, 307, 308):
                        break
                    location = resp.header("Location") or ""
                    resp.read()
                    url = urllib.parse.urljoin(url, location)
            if (
                resp.status in (429, 500, 502, 503, 504)
                and retries < 4
                and (body is None or isinstance(body, bytes))
            ):
                resp.read()
                retries += 1
                time.sleep(min(0.25 * 2**retries, 4.0))  # 0.5, 1, 2, 4 s
                continue
            self._warnings(resp)
            if resp.status not in ok:
                raise _error(resp, method, path, self.host)
            return resp
        raise _error(resp, method, path, self.host)

    def _warnings(self, resp: Response) -> None:
        """`Warning: 299 - "text"` headers (a deprecation, a quota) go to the user, each
        once per registry, through `on_warning` (default: a line on stderr)."""
        for value in resp.resp.headers.get_all("Warning") or []:
            m = re.match(r'\s*299\s+\S+\s+"((?:[^"\\]|\\.)*)"', value)
            if m is None:
                continue
            text = m.group(1).replace('\\"', '"')
            with self._lock:
                if text in self._warned:
                    continue
                self._warned.add(text)
            self.on_warning(f"{self.host}: {text}")

    @staticmethod
    def on_warning(text: str) -> None:
        import sys

        print(f"Warning: {text}", file=sys.stderr)

    # --- the API ---------------------------------------------------------------------------
    def check_login(self, user: str, password: str) -> None:
        """GET /v2/ with these credentials (Basic, or through the token flow): raises
        Unauthorized when the registry refuses them."""
        self._basic = None
        self._tokens.clear()
        self._challenge = None
        self._override = (user, password)
        try:
            resp = self.request("GET", "/v2/", scope="")
            resp.read()
        finally:
            self._override = None

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index; a digest ref is verified."""
        resp = self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull",
            headers={"Accept": ACCEPT},
        )  # fmt: skip
        data = resp.read()
        digest = oci.sha256_bytes(data)
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"{self.host}/{repo}@{ref}: the manifest's digest is {digest}")
        declared = (resp.header("Content-Type") or "").split(";")[0].strip()
        media_type = oci.manifest_media_type(data, declared or None)
        if declared in oci.MANIFEST_TYPES + oci.INDEX_TYPES and media_type != declared:
            # The spec: a body whose own mediaType differs from Content-Type is refused.
            raise RegistryError(
                f"{self.host}/{repo}:{ref}: served as {declared} but the manifest says {media_type}"
            )
        return data, media_type, digest

    def get_blob(self, repo: str, digest: str, start: int = 0) -> Response:
        """The blob from byte `start` on (Range; status 206, or 200 when the registry
        ignores Range: the caller skips)."""
        return self.request(
            "GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull",
            headers={"Range": f"bytes={start}-"} if start else None, ok=(200, 206),
        )  # fmt: skip

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request(
            "HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull,push",
            ok=(200, 404),
        )  # fmt: skip
        resp.read()
        return resp.status == 200

    def mount_blob(self, repo: str, digest: str, source_repo: str) -> str | None:
        """Cross-repository mount: POST ...?mount=DIGEST&from=SOURCE. None when the registry
        mounted it (201); else the Location of the upload session it opened instead (202)."""
        scope = f"repository:{repo}:pull,push repository:{source_repo}:pull"
        query = urllib.parse.urlencode({"mount": digest, "from": source_repo})
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?{query}", scope=scope,
                            ok=(201, 202), headers={"Content-Length": "0"}, body=b"")  # fmt: skip
        resp.read()
        return None if resp.status == 201 else self._location(resp, repo)

    def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        body: Any,
        *,
        reopen: Callable[[], Any] | None = None,
        location: str | None = None,
    ) -> None:
        """Upload a blob: one PUT (monolithic) up to CHUNK bytes or for a stream that cannot
        seek, else PATCH chunks. `location` is a session already open (a mount's 202).

        A stream body that cannot be sent again as it is (a 401 after its bytes went, a lost
        connection) is sent again from `reopen()` in a new session, with a fresh token."""
        scope = f"repository:{repo}:pull,push"
        opened: list[Any] = []  # bodies reopened here, closed here
        try:
            min_chunk = 0
            for attempt in range(3):
                if location is None:
                    resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope,
                                        ok=(202,), headers={"Content-Length": "0"},
                                        body=b"")  # fmt: skip
                    resp.read()
                    location = self._location(resp, repo)
                    least = resp.header("OCI-Chunk-Min-Length") or ""
                    min_chunk = int(least) if least.isdigit() else 0
                try:
                    self._upload(repo, scope, location, digest, size, body, min_chunk)
                    return
                except RegistryError as e:
                    # A 401 after the bytes went, a lost connection, or a 5xx answer to a
                    # stream (which request() cannot send again itself): a new session.
                    again = isinstance(e, StaleAuth | TransportError) or (e.status or 0) >= 500
                    if reopen is None or attempt == 2 or not again:
                        raise
                    if isinstance(e, TransportError):
                        self.forget_token(scope)  # the next request fetches a fresh one
                    elif not isinstance(e, StaleAuth):
                        time.sleep(0.5 * 2**attempt)
                    body = reopen()
                    opened.append(body)
                    location = None
        finally:
            for b in opened:
                with contextlib.suppress(OSError):
                    b.close()

    def _upload(
        self,
        repo: str,
        scope: str,
        location: str,
        digest: str,
        size: int,
        body: Any,
        min_chunk: int = 0,
    ) -> None:
        chunk = max(upload_chunk_size(), min_chunk)  # the registry's OCI-Chunk-Min-Length
        if size <= chunk or not getattr(body, "seekable", lambda: False)():
            url = _with_digest(location, digest)
            resp = self.request(
                "PUT", url, scope=scope, ok=(201,), body=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )  # fmt: skip
            resp.read()
            return
        offset = 0
        failures = 0
        while offset < size:
            body.seek(offset)
            data = body.read(min(chunk, size - offset))
            try:
                resp = self.request(
                    "PATCH", location, scope=scope, ok=(202,), body=data,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Length": str(len(data)),
                             "Content-Range": f"{offset}-{offset + len(data) - 1}"},
                )  # fmt: skip
                resp.read()
                location = self._location(resp, repo)
                offset += len(data)
            except RegistryError:
                failures += 1
                if failures > 3:
                    raise
                location, offset = self._resume_point(repo, scope, location)
        resp = self.request(
            "PUT", _with_digest(location, digest), scope=scope, ok=(201,), body=b"",
            headers={"Content-Length": "0"},
        )  # fmt: skip
        resp.read()

    def _resume_point(self, repo: str, scope: str, location: str) -> tuple[str, int]:
        """Where an upload session stands after a failed chunk: (location, next offset) from
        its `Range`; a session the registry no longer accepts (Debian's 2.8 refuses one whose
        state lags what it stored) is replaced by a new one, from offset 0."""
        try:
            status = self.request("GET", location, scope=scope, ok=(204,))
            status.read()
            have = (status.header("Range") or "0-0").partition("-")[2]
            return self._location(status, repo, location), (
                int(have) + 1 if have.isdigit() and int(have) > 0 else 0
            )
        except RegistryError:
            resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,),
                                headers={"Content-Length": "0"}, body=b"")  # fmt: skip
            resp.read()
            return self._location(resp, repo), 0

    def _location(self, resp: Response, repo: str, default: str | None = None) -> str:
        location = resp.header("Location") or default
        if not location:
            raise RegistryError(f"{self.host}: upload session without a Location")
        return urllib.parse.urljoin(
            f"{self.scheme}://{self.host}/v2/{repo}/blobs/uploads/", location
        )

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """PUT a manifest or index. One with a `subject` (an artifact: a signature, an SBOM)
        is also listed in its subject's referrers: by the registry when it says so (the
        `OCI-Subject` header), else by us, in the index the fallback tag `sha256-<hex>` names
        (Debian's 2.8 and distribution 3.x have no referrers API)."""
        resp = self.request(
            "PUT", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull,push",
            ok=(201,), body=data, headers={"Content-Type": media_type},
        )  # fmt: skip
        resp.read()
        digest = oci.sha256_bytes(data)
        if b'"subject"' in data and not resp.header("OCI-Subject"):
            obj = oci.load_json(data, "manifest")
            subject = obj.get("subject")
            if isinstance(subject, dict) and subject.get("digest"):
                desc = referrer_descriptor(obj, media_type, digest, len(data))
                self._tag_referrer(repo, str(subject["digest"]), desc)
        return digest

    def _tag_referrer(self, repo: str, subject: str, desc: dict[str, Any]) -> None:
        tag = subject.replace(":", "-")
        try:
            data, _, _ = self.get_manifest(repo, tag)
            index = oci.load_json(data, f"referrers index {tag}")
        except NotFound:
            index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}
        manifests = [m for m in index.get("manifests", []) if isinstance(m, dict)]
        if any(m.get("digest") == desc["digest"] for m in manifests):
            return
        index["manifests"] = [*manifests, desc]
        body = json.dumps(index, separators=(",", ":")).encode()
        resp = self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", scope=f"repository:{repo}:pull,push",
            ok=(201,), body=body, headers={"Content-Type": oci.OCI_INDEX},
        )  # fmt: skip
        resp.read()

    def referrers(
        self, repo: str, digest: str, artifact_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose `subject` is `digest` (OCI 1.1): the referrers
        API, pages followed by `Link`; where the registry lacks it (a 404), the index the tag
        `sha256-<hex>` names. Filtered by `artifact_type` here when the registry did not."""
        query = f"?artifactType={urllib.parse.quote(artifact_type)}" if artifact_type else ""
        path = f"/v2/{repo}/referrers/{digest}{query}"
        scope = f"repository:{repo}:pull"
        out: list[dict[str, Any]] = []
        filtered = False
        resp = self.request("GET", path, scope=scope, headers={"Accept": oci.OCI_INDEX},
                            ok=(200, 400, 404, 405))  # fmt: skip
        if resp.status == 200:
            filtered = "artifactType" in (resp.header("OCI-Filters-Applied") or "")
            while True:
                page = oci.load_json(resp.read(), f"{self.host}: referrers of {digest}")
                out += [m for m in page.get("manifests") or [] if isinstance(m, dict)]
                m = re.match(r"\s*<([^>]+)>", resp.header("Link") or "")
                if not m:
                    break
                resp = self.request("GET", urllib.parse.urljoin(path, m.group(1)), scope=scope,
                                    headers={"Accept": oci.OCI_INDEX})  # fmt: skip
        else:
            resp.read()
            try:
                data, _, _ = self.get_manifest(repo, digest.replace(":", "-"))
            except NotFound:
                return []
            index = oci.load_json(data, f"{self.host}: referrers tag of {digest}")
            out = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
        if artifact_type and not filtered:
            out = [m for m in out if m.get("artifactType") == artifact_type]
        return out

    def tags(self, repo: str, page_size: int | None = None) -> list[str]:
        """Every tag of `repo`, sorted: pages of `page_size` (`n`) followed by their `Link`
        header, or by `last` when a full page comes without one. Debian's 2.8 ignores `n`
        and `last` and answers everything at once, unsorted: the sort is ours."""
        out: list[str] = []
        query = f"?n={page_size}" if page_size else ""
        path = f"/v2/{repo}/tags/list{query}"
        seen: set[str] = set()
        while path:
            resp = self.request("GET", path, scope=f"repository:{repo}:pull")
            try:
                data = json.loads(resp.read() or b"{}")
                page = [str(t) for t in data.get("tags") or []]
            except (ValueError, AttributeError) as e:
                raise RegistryError(f"{self.host}: {path}: not a tag list ({e})") from None
            new = [t for t in page if t not in seen]
            seen.update(new)
            out += new
            link = resp.header("Link") or ""
            m = re.match(r"\s*<([^>]+)>", link)
            if m:
                path = urllib.parse.urljoin(f"/v2/{repo}/tags/list", m.group(1))
            elif page_size and len(page) >= page_size and new:
                last = urllib.parse.quote(max(page))
                path = f"/v2/{repo}/tags/list?n={page_size}&last={last}"
            else:
                path = ""
        return sorted(out)

    def manifest_digest(self, repo: str, ref: str) -> str:
        """The digest a tag points at (the manifest's own bytes hashed: Docker-Content-Digest
        is optional and may use another algorithm)."""
        if ref.startswith("sha256:"):
            return ref
        return self.get_manifest(repo, ref)[2]

    def delete_manifest(self, repo: str, ref: str) -> str:
        """DELETE a manifest by digest (a tag is resolved first: registries refuse a DELETE
        by tag, Debian's 2.8 with DIGEST_INVALID). Every tag pointing at it goes with it.
        Returns the digest. The registry must allow deletes (storage.delete.enabled)."""
        digest = self.manifest_digest(repo, ref)
        try:
            resp = self.request("DELETE", f"/v2/{repo}/manifests/{digest}",
                                scope=f"repository:{repo}:delete", ok=(200, 202))  # fmt: skip
        except RegistryError as e:
            if "HTTP 405" in str(e) or "UNSUPPORTED" in str(e):
                raise RegistryError(f"{e}: the registry does not allow deletes") from None
            raise
        resp.read()
        return digest


def referrer_descriptor(
    manifest: dict[str, Any], media_type: str, digest: str, size: int
) -> dict[str, Any]:
    """How a referrers index lists a manifest: its artifactType (else its config's media
    type) and annotations, as the spec has it."""
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    artifact_type = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType")
    if artifact_type:
        desc["artifactType"] = artifact_type
    if manifest.get("annotations"):
        desc["annotations"] = manifest["annotations"]
    return desc


def _rewind(body: Any) -> bool:
    """Seek a stream body back to its start; False when it cannot be."""
    try:
        if not body.seekable():
            return False
        body.seek(0)
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _error(resp: Response, method: str, path: str, host: str) -> RegistryError:
    body = b""
    with contextlib.suppress(OSError):
        body = resp.read()
    detail = ""
    try:
        errors = json.loads(body).get("errors") or []
        if errors:
            e = errors[0]
            detail = f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        detail = body.decode(errors="replace").strip().splitlines()[0] if body.strip() else ""
    text = f"{host}: {method} {path}: HTTP {resp.status}" + (f" ({detail})" if detail else "")
    err: RegistryError
    if resp.status == 404:
        err = NotFound(text)
    elif resp.status in (401, 403):
        err = Unauthorized(text)
    else:
        err = RegistryError(text)
    err.status = resp.status
    return err
