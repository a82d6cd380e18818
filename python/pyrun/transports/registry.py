"""A registry (`docker://HOST/REPO[:TAG|@DIGEST]`) as an image source and destination of the
one copy algorithm: `pull` is a copy from here into the store, `push` a copy from the store to
here. Pulled layers stream from the socket through a pipe straight into the Rust engine
(decompress, hash, extract in one pass) while they arrive."""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from pyrun import oci
from pyrun.reference import Reference
from pyrun.registry.client import Registry, RegistryError, TransportError
from pyrun.transports.base import Blob, LayerResult, SourceImage, SourceLayer

BLOB_ATTEMPTS = 4  # a blob download that breaks goes on from where it broke, 3 more times


class RemoteBlob(Blob):
    """A blob in a registry: read whole (configs), opened as a stream, or piped into an fd
    by a thread (layers, for the store's one-pass unpack)."""

    def __init__(self, registry: Registry, repo: str, descriptor: dict[str, Any]) -> None:
        super().__init__(path="", offset=0, length=int(descriptor.get("size", 0)))
        self.registry = registry
        self.repo = repo
        self.digest = str(descriptor["digest"])
        self.transferred = 0  # bytes so far (progress bars read it)

    def size(self) -> int:
        return int(self.length or 0)

    def read(self) -> bytes:
        resp = self.registry.get_blob(self.repo, self.digest)
        data = resp.read()
        if oci.sha256_bytes(data) != self.digest:
            raise RegistryError(
                f"{self.registry.host}/{self.repo}: blob {self.digest} has another digest"
            )
        return data

    def open(self) -> BinaryIO:
        return self.registry.get_blob(self.repo, self.digest).resp

    def head(self, n: int = 16) -> bytes:
        return self.read()[:n]

    def pipe(
        self, partial: Path | None = None
    ) -> tuple[int, threading.Thread, list[BaseException]]:
        """A read fd that yields the blob as it downloads; the thread writes it, errors land
        in the list (join the thread, then check). With `partial`, the bytes are also kept in
        that file until the blob is complete, and a later call resumes after them (Range)."""
        r, w = os.pipe()
        errors: list[BaseException] = []

        def pump() -> None:
            with os.fdopen(w, "wb", buffering=0) as out:  # closed on every path: EOF for the reader
                keep = _Partial.open(partial)
                try:
                    got = keep.replay(out) if keep else 0
                    self.transferred = got
                    first: _Cut | None = None
                    for attempt in range(BLOB_ATTEMPTS):
                        try:
                            got = self._stream(got, out, keep)
                            break
                        except _Cut as cut:
                            # A reset or an early close: again from where it broke (Range),
                            # after a pause that doubles (0.5, 1, 2 s). What the user reads
                            # when every attempt failed is what broke first.
                            got, first = cut.got, first or cut
                            if attempt == BLOB_ATTEMPTS - 1:
                                raise first.error from None
                            time.sleep(0.5 * 2**attempt)
                    if keep:
                        keep.done()
                except BrokenPipeError:
                    if keep:  # the reader refused the bytes (a digest mismatch): start over
                        keep.discard()
                except BaseException as e:
                    errors.append(e)
                finally:
                    if keep:
                        keep.close()

        t = threading.Thread(target=pump, name=f"pull {self.digest[7:19]}", daemon=True)
        t.start()
        return r, t, errors

    def _stream(self, got: int, out: Any, keep: _Partial | None) -> int:
        """Write the blob from byte `got` on to `out` (and `keep`); returns the total. Raises
        _Cut when the connection breaks or closes early."""
        where = f"{self.registry.host}/{self.repo}"
        try:
            resp = self.registry.get_blob(self.repo, self.digest, start=got)
        except RegistryError as e:
            if not got and not isinstance(e, TransportError):
                raise  # an HTTP error before any byte (404, 401, ...): final
            raise _Cut(got, RegistryError(
                f"{where}: the download of {self.digest[:19]} broke after {got} of "
                f"{self.size()} bytes and could not go on ({e}; pull again to resume)"
            )) from None  # fmt: skip
        skip = got if resp.status == 200 else 0  # the registry ignored Range
        while True:
            try:
                chunk = resp.resp.read(1 << 20)
            except (OSError, http.client.HTTPException) as e:
                resp.conn.close()
                raise _Cut(got, RegistryError(
                    f"{where}: the download of {self.digest[:19]} broke after {got} of "
                    f"{self.size()} bytes ({e or type(e).__name__}; pull again to resume)"
                )) from None  # fmt: skip
            if not chunk:
                break
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
                if not chunk:
                    continue
            got += len(chunk)
            self.transferred = got
            out.write(chunk)
            if keep:
                keep.write(chunk)
        expected = self.size()
        if expected and got < expected:
            resp.conn.close()
            raise _Cut(got, RegistryError(
                f"{where}: the connection closed after {got} of {expected} bytes of "
                f"{self.digest[:19]} (pull again to resume)"
            ))  # fmt: skip
        return got


class _Cut(Exception):
    """A blob download that broke after `got` bytes; `error` says so to the user."""

    def __init__(self, got: int, error: RegistryError) -> None:
        super().__init__(str(error))
        self.got = got
        self.error = error


class Counted:
    """A blob's file object that keeps `blob.transferred` (bytes read, for progress bars);
    seekable when the file is."""

    def __init__(self, f: BinaryIO, blob: Any) -> None:
        self.f = f
        self.blob = blob
        blob.transferred = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.blob.transferred += len(data)
        return data

    def seekable(self) -> bool:
        return bool(self.f.seekable())

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = self.f.seek(offset, whence)
        self.blob.transferred = pos
        return pos

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Partial:
    """The bytes of a blob downloaded so far, kept across pulls; flock'ed, so a concurrent
    pull of the same blob downloads without it instead of interleaving."""

    def __init__(self, path: Path, f: BinaryIO) -> None:
        self.path = path
        self.f = f

    @classmethod
    def open(cls, path: Path | None) -> _Partial | None:
        if path is None:
            return None
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")  # noqa: SIM115 (owned by the _Partial)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return None
        return cls(path, f)

    def replay(self, out: Any) -> int:
        self.f.seek(0)
        n = 0
        while chunk := self.f.read(1 << 20):
            out.write(chunk)
            n += len(chunk)
        return n

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def done(self) -> None:
        self.discard()

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        self.f.close()


class RegistrySource:
    def __init__(self, ref: Reference, platform: dict[str, str] | None = None) -> None:
        self.ref = ref
        self.registry = Registry(ref.domain)
        self.platform = platform
        self.digests: list[str] = []
        self.resolved: str | None = None  # the digest the reference named (an index's, too)

    def images(self, ref: str | None = None) -> list[SourceImage]:
        repo = self.ref.path
        target = self.ref.digest or self.ref.tag or "latest"
        data, media_type, self.resolved = self.registry.get_manifest(repo, target)
        if media_type in oci.INDEX_TYPES:
            chosen = oci.select_manifest(oci.load_json(data, "image index"), self.platform)
            data, media_type, _digest = self.registry.get_manifest(repo, chosen["digest"])
        name = Reference(self.ref.domain, self.ref.path, self.ref.tag, None)
        names = [name] if self.ref.tag or not self.ref.digest else []
        return [self._image(data, media_type, names)]

    def index(self, ref: str | None = None) -> tuple[bytes, str, list[SourceImage]] | None:
        """The image index the reference names (every image in it), or None for an image."""
        repo = self.ref.path
        data, media_type, self.resolved = self.registry.get_manifest(
            repo, self.ref.digest or self.ref.tag or "latest"
        )
        if media_type not in oci.INDEX_TYPES:
            return None
        children = []
        for m in oci.load_json(data, "image index").get("manifests", []):
            child, child_type, _ = self.registry.get_manifest(repo, str(m["digest"]))
            children.append(self._image(child, child_type, []))
        return data, media_type, children

    def referrers(self, digest: str) -> list[SourceImage]:
        """The artifacts (signatures, SBOMs: manifests whose `subject` is `digest`)."""
        out = []
        for d in self.registry.referrers(self.ref.path, digest):
            data, media_type, _ = self.registry.get_manifest(self.ref.path, str(d["digest"]))
            if media_type not in oci.MANIFEST_TYPES:
                raise RegistryError(
                    f"{self.ref.name}: referrer {d['digest']} of {digest} is a {media_type}, "
                    "not an image manifest: not copied"
                )
            manifest = oci.load_json(data, "manifest")
            cdesc = manifest.get("config") or {}
            config = RemoteBlob(self.registry, self.ref.path, cdesc).read()
            layers = [
                SourceLayer(RemoteBlob(self.registry, self.ref.path, ld), ld, None)
                for ld in manifest.get("layers", [])
            ]
            out.append(SourceImage(data, media_type, config, layers, []))
        return out

    def _image(self, data: bytes, media_type: str, names: list[Reference]) -> SourceImage:
        repo = self.ref.path
        if media_type not in oci.MANIFEST_TYPES:
            raise RegistryError(f"{self.ref}: unsupported manifest type {media_type}")
        manifest = oci.load_json(data, "manifest")
        cdesc = manifest.get("config") or {}
        config = RemoteBlob(self.registry, repo, cdesc).read()
        diff_ids = list(oci.load_json(config, "image config").get("rootfs", {}).get("diff_ids", []))
        layers = [
            SourceLayer(RemoteBlob(self.registry, repo, d), d, diff)
            for d, diff in zip(manifest.get("layers", []), diff_ids, strict=False)
        ]
        self.digests += [str(d["digest"]) for d in manifest.get("layers", [])]
        self.digests += [str(cdesc.get("digest"))] if cdesc.get("digest") else []
        return SourceImage(data, media_type, config, layers, names)

    def record_origins(self, root: Path) -> None:
        """After a successful copy: these blobs are in this repository (mount candidates)."""
        from pyrun.registry import origins

        origins.record(root, self.registry.host, self.ref.path, self.digests)

    def close(self) -> None:
        self.registry.close()


class RegistryDestination:
    """Blobs first (each skipped when the registry has it), then the manifest by tag. Layers
    may be put from several threads at once (`concurrent`): one connection per thread. Holds
    image indexes (`takes_index`): each image by digest, then the index by tag."""

    concurrent = True
    takes_index = True
    keeps_referrers = True  # a manifest with a subject: listed by put_manifest
    in_index = False  # set while the images of an index are copied: manifests by digest

    def __init__(self, ref: Reference) -> None:
        self.ref = ref
        self.registry = Registry(ref.domain)
        self.repo = ref.path
        self.origins_root: Path | None = None  # where mount candidates are known (the store)
        self.digests: list[str] = []
        self.mounted: dict[str, str] = {}  # digest -> the repository it was mounted from
        self._lock = threading.Lock()

    def has_layer(self, descriptor: dict[str, Any], diff_id: str | None) -> bool:
        found = self.registry.has_blob(self.repo, descriptor["digest"])
        if found:
            with self._lock:
                self.digests.append(str(descriptor["digest"]))
        return found

    def _mount(self, digest: str) -> tuple[bool, str | None]:
        """Try a cross-repository mount from repositories of this registry known to hold the
        blob: (mounted, the Location of an upload session a 202 opened instead)."""
        if self.origins_root is None:
            return False, None
        from pyrun.registry import origins

        for source in origins.lookup(self.origins_root, digest, self.registry.host)[:2]:
            if source == self.repo:
                continue
            try:
                location = self.registry.mount_blob(self.repo, digest, source)
            except RegistryError:
                continue  # no permission on the source, or no mounts: upload
            if location is None:
                with self._lock:
                    self.mounted[digest] = source
                return True, None
            return False, location
        return False, None

    def put_layer(self, layer: SourceLayer) -> LayerResult:
        desc = layer.descriptor
        if desc is None:
            from pyrun import _core

            if not layer.blob.path:
                raise RegistryError("a layer without a descriptor must be a local file")
            digest = _core.sha256_file(layer.blob.path, layer.blob.offset, layer.blob.length)
            size = layer.blob.size()
            media_type = oci.OCI_LAYER_GZIP
            diff_id = layer.diff_id or digest
        else:
            digest, size, media_type = desc["digest"], int(desc["size"]), desc["mediaType"]
            diff_id = layer.diff_id or digest
        # With a descriptor, the copy asked has_layer just before: no second HEAD.
        if desc is not None or not self.registry.has_blob(self.repo, digest):
            mounted, location = self._mount(digest)
            if not mounted:
                blob = layer.blob

                def reopen() -> Counted:
                    return Counted(blob.open(), blob)

                f = reopen()
                try:
                    self.registry.upload_blob(
                        self.repo, digest, size, f, reopen=reopen, location=location
                    )
                finally:
                    f.close()
        with self._lock:
            self.digests.append(digest)
        return LayerResult(digest, diff_id, size, media_type)

    def put_blob(self, data: bytes, digest: str, media_type: str) -> None:
        if not self.registry.has_blob(self.repo, digest):
            mounted, location = self._mount(digest)
            if not mounted:
                self.registry.upload_blob(self.repo, digest, len(data), data, location=location)
        with self._lock:
            self.digests.append(digest)

    def put_manifest(self, data: bytes, media_type: str, names: list[Reference]) -> str:
        """PUT under each name's tag; an image of an index (`in_index`), by digest."""
        if self.in_index:
            return self.registry.put_manifest(self.repo, oci.sha256_bytes(data), data, media_type)
        tags = [n.tag for n in names if n.tag] or [self.ref.tag or "latest"]
        digest = ""
        for tag in tags:
            digest = self.registry.put_manifest(self.repo, tag, data, media_type)
        return digest

    def add_referrer(self, manifest: bytes, media_type: str) -> None:
        """Nothing more: putting it listed it (the registry, or the fallback tag)."""

    def commit(self) -> None:
        self.registry.close()
        if self.origins_root is not None:
            from pyrun.registry import origins

            origins.record(self.origins_root, self.registry.host, self.repo, self.digests)

    def abort(self) -> None:
        self.registry.close()
