"""The local image store: content-addressed blobs, tags, and an unpacked-layer cache shared by
every image and container.

Layout under the root (default /var/lib/pyrun):
  blobs/sha256/<hex>        manifests, configs, indexes and layer blobs, by digest
  layers/sha256/<hex>/diff  a layer unpacked once, keyed by its DiffID; an overlayfs lower dir
  layers/sha256/<hex>/layer.json
  refs.json                 images (by manifest digest) and tags
  containers/<id>/container.json  containers (they keep their image alive)
  tmp/                      work in progress; anything here is garbage once no writer runs

Each container also has a runtime directory, <run root>/<id> (Store.run_root: on a tmpfs),
with what a start makes again anyway: the OCI bundle's config.json, the /etc files it
bind-mounts, the pid file and the root's mount point.

Concurrency: metadata changes hold `lock` exclusively for a moment; a writer (import, load, pull)
holds `gc.lock` shared for its whole run, garbage collection holds it exclusively. Every file is
written to tmp/ and renamed into place, so a kill -9 at any point leaves a consistent store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyrun import oci
from pyrun.errors import DigestMismatch, ImageInUse, ImageNotFound, InvalidReference, StoreError
from pyrun.reference import Reference, is_digest, parse
from pyrun.store.fsutil import (
    atomic_write,
    atomic_write_json,
    flocked,
    fsync_dir,
    remove_tree,
    tree_size,
)

DEFAULT_ROOT = "/var/lib/pyrun"
_TAGS: dict[str, str] = {}  # Store.kernel_tag by root as given
RUN_TMPFS = Path("/run/pyrun/containers")  # root's containers' runtime directories
_run_tmpfs_ready: list[bool] = []


def _run_tmpfs() -> bool:
    """Whether RUN_TMPFS is usable (a tmpfs, mounted on first use where /run is not one);
    asked once per process."""
    if not _run_tmpfs_ready:
        from pyrun import _core

        try:
            _core.ensure_tmpfs(str(RUN_TMPFS))
            _run_tmpfs_ready.append(True)
        except OSError:
            _run_tmpfs_ready.append(False)
    return _run_tmpfs_ready[0]


def default_root() -> Path:
    return Path(os.environ.get("PYRUN_ROOT") or DEFAULT_ROOT)


def _hex(digest: str) -> str:
    if not is_digest(digest):
        raise StoreError(f"unsupported or malformed digest {digest!r}")
    return digest[len("sha256:") :]


def now_rfc3339() -> str:
    """The time as Go's RFC3339Nano writes it (no trailing zeros in the fraction), so configs
    that Go tools (skopeo, Docker) parse and write back keep their bytes and digests."""
    # time rather than datetime: one import less on every CLI start.
    ns = time.time_ns()
    frac = f"{ns % 1_000_000_000 // 1000:06d}".rstrip("0")
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
        + (f".{frac}" if frac else "")
        + "Z"
    )


class ImageRecord:
    """One image in the store, as resolved from a reference."""

    def __init__(
        self,
        manifest_digest: str,
        media_type: str,
        manifest: dict[str, Any],
        config_digest: str,
        config: dict[str, Any],
        tags: list[str] | None = None,
        added: str = "",
    ) -> None:
        self.manifest_digest = manifest_digest
        self.media_type = media_type
        self.manifest = manifest
        self.config_digest = config_digest
        self.config = config
        self.tags = tags if tags is not None else []
        self.added = added

    @property
    def id(self) -> str:
        """Docker's image ID: the config digest."""
        return self.config_digest

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))


class GCResult:
    """What a garbage collection removed."""

    def __init__(self) -> None:
        self.blobs_removed = 0
        self.layers_removed = 0
        self.bytes_freed = 0
        self.images_removed: list[str] = []


class Store:
    """Handle on a store root. Cheap to create; directories are made on first use."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self._ready = False
        self._run_root: Path | None = None

    # -- layout -----------------------------------------------------------------------------
    def ensure(self) -> Store:
        if not self._ready:
            try:
                for d in ("blobs/sha256", "layers/sha256", "tmp", "containers"):
                    (self.root / d).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create store at {self.root}: {e.strerror}") from None
            self._ready = True
        return self

    @property
    def tmp(self) -> Path:
        return self.ensure().root / "tmp"

    @property
    def kernel_tag(self) -> str:
        """'' for the default store, else 8 hex of its real path: what tells this store's
        kernel-wide names and runtime files (bridges, netns directory, firewall table, run_root)
        from another store's."""
        key = str(self.root)
        tag = _TAGS.get(key)
        if tag is None:
            root = os.path.realpath(self.root)
            if root == DEFAULT_ROOT:
                tag = ""
            else:
                try:  # the builtin module: hashlib's OpenSSL import costs a `run` ~3 ms
                    from _sha256 import sha256  # type: ignore[import-not-found]
                except ImportError:
                    from hashlib import sha256
                tag = sha256(root.encode()).hexdigest()[:8]
            _TAGS[key] = tag
        return tag

    @property
    def run_root(self) -> Path:
        """The parent of the containers' runtime directories (Container.run_dir):
        /run/pyrun/containers/<kernel_tag or "default"> for root (that directory a tmpfs,
        mounted there where /run is not one), $XDG_RUNTIME_DIR/pyrun/containers/<tag> for
        others, else run/ in the store. What lives there is made again at every start, so a
        reboot that empties it loses nothing, and on a tmpfs it costs no disk inode per
        container (podman's runroot, Docker's exec-root)."""
        if self._run_root is None:
            tag = self.kernel_tag or "default"
            xdg = os.environ.get("XDG_RUNTIME_DIR", "")
            if os.geteuid() == 0 and _run_tmpfs():
                self._run_root = RUN_TMPFS / tag
            elif os.geteuid() != 0 and xdg and os.access(xdg, os.W_OK | os.X_OK):
                self._run_root = Path(xdg) / "pyrun" / "containers" / tag
            else:
                self._run_root = self.root.absolute() / "run"
        return self._run_root

    def sweep_run_root(self) -> int:
        """Remove runtime directories whose container is gone (a removal cut short); returns
        how many. One whose root is still mounted is left alone."""
        removed = 0
        try:
            entries = list(self.run_root.iterdir())
        except FileNotFoundError:
            return 0
        for entry in entries:
            if (self.root / "containers" / entry.name).exists():
                continue
            if os.path.ismount(entry / "rootfs"):
                from pyrun import _core

                with contextlib.suppress(OSError):
                    _core.unmount(str(entry / "rootfs"), detach=True)
                if os.path.ismount(entry / "rootfs"):
                    continue
            remove_tree(entry)
            removed += 1
        return removed

    def new_temp(self, suffix: str = "") -> Path:
        return self.tmp / f"{os.getpid()}-{os.urandom(6).hex()}{suffix}"

    @contextlib.contextmanager
    def writing(self) -> Iterator[Store]:
        """A writer's lease: garbage collection waits until every writer is done."""
        self.ensure()
        with flocked(self.root / "gc.lock", shared=True):
            yield self

    @contextlib.contextmanager
    def _meta_lock(self) -> Iterator[None]:
        self.ensure()
        with flocked(self.root / "lock"):
            yield

    # -- blobs ------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store") from None

    def put_blob_bytes(self, data: bytes, digest: str | None = None) -> str:
        actual = oci.sha256_bytes(data)
        if digest is not None and digest != actual:
            raise DigestMismatch(f"digest mismatch: expected {digest}, got {actual}")
        path = self.ensure().blob_path(actual)
        if not path.exists():
            atomic_write(path, data, tmpdir=self.tmp)
        return actual

    def commit_blob_file(self, tmp: Path, digest: str) -> None:
        """Move a fully written and verified temp file into place as blob `digest`."""
        path = self.blob_path(digest)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_dir(path.parent)

    # -- unpacked layers ----------------------------------------------------------------------
    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / "sha256" / _hex(diff_id)

    def layer_diff(self, diff_id: str) -> Path:
        return self.layer_path(diff_id) / "diff"

    def has_layer(self, diff_id: str) -> bool:
        return (self.layer_path(diff_id) / "layer.json").is_file()

    def unpack_layer(
        self,
        src: str | int,
        *,
        offset: int = 0,
        length: int | None = None,
        digest: str | None = None,
        diff_id: str | None = None,
        keep_blob: bool = True,
    ) -> dict[str, Any]:
        """Read a layer blob once: store the blob, hash it, and unpack it into the layer cache.

        `digest`/`diff_id` are verified when given; a mismatch leaves the store untouched.
        Returns the engine's result (digest, diff_id, size, compression, ...)."""
        from pyrun import _core

        self.ensure()
        work = self.new_temp(".layer")
        work.mkdir()
        diff = work / "diff"
        diff.mkdir()
        blob_tmp = self.new_temp(".blob") if keep_blob else None
        try:
            try:
                res = _core.extract_layer(
                    src,
                    str(diff),
                    offset=offset,
                    length=length,
                    blob_out=str(blob_tmp) if blob_tmp else None,
                    expect_digest=digest,
                    expect_diff_id=diff_id,
                )
            except _core.LayerError as e:
                raise (
                    DigestMismatch(str(e))
                    if "mismatch" in str(e)
                    else StoreError(f"cannot unpack layer: {e}")
                ) from None
            if blob_tmp is not None:
                if self.has_blob(res["digest"]):
                    blob_tmp.unlink()
                else:
                    self.commit_blob_file(blob_tmp, res["digest"])
            target = self.layer_path(res["diff_id"])
            if self.has_layer(res["diff_id"]):
                return dict(res)
            meta = {k: res[k] for k in ("diff_id", "uncompressed_size", "entries")}
            meta["created"] = now_rfc3339()
            atomic_write_json(work / "layer.json", meta)
            # Under the metadata lock: several writers may unpack the same layer at once
            # (pulls, parallel build stages), and the first to get here must not be taken for
            # a leftover by the next nor replaced under a reader.
            with self._meta_lock():
                if self.has_layer(res["diff_id"]):
                    return dict(res)
                if target.exists():  # a leftover without layer.json: an interrupted unpack
                    remove_tree(target)
                os.rename(work, target)
            fsync_dir(target.parent)
            return dict(res)
        finally:
            remove_tree(work)
            if blob_tmp is not None:
                remove_tree(blob_tmp)

    # -- refs ---------------------------------------------------------------------------------
    def _refs_path(self) -> Path:
        return self.root / "refs.json"

    def load_refs(self) -> dict[str, Any]:
        try:
            data = self._refs_path().read_bytes()
        except FileNotFoundError:
            return {"images": {}, "tags": {}}
        try:
            refs = json.loads(data)
        except ValueError:
            raise StoreError(f"{self._refs_path()} is corrupt: not JSON") from None
        refs.setdefault("images", {})
        refs.setdefault("tags", {})
        return dict(refs)

    @contextlib.contextmanager
    def update_refs(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write refs.json under the metadata lock; written only if the block succeeds."""
        with self._meta_lock():
            refs = self.load_refs()
            yield refs
            # The temp file sits beside refs.json, not in tmp/: metadata changes also happen
            # outside a writer's lease, while garbage collection may be emptying tmp/.
            atomic_write_json(self._refs_path(), refs)

    def add_image(self, manifest_digest: str, tags: list[Reference] | None = None) -> ImageRecord:
        """Record a manifest (already stored with its config and layers) as an image, and tag it."""
        manifest = oci.load_json(self.read_blob(manifest_digest), f"manifest {manifest_digest}")
        media_type = oci.manifest_media_type(self.read_blob(manifest_digest))
        config_digest = manifest.get("config", {}).get("digest")
        if not config_digest or not self.has_blob(config_digest):
            raise StoreError(f"manifest {manifest_digest} has no stored config")
        for layer in manifest.get("layers", []):
            if not self.has_blob(layer["digest"]):
                raise StoreError(
                    f"manifest {manifest_digest} references missing layer {layer['digest']}"
                )
        with self.update_refs() as refs:
            entry = refs["images"].setdefault(
                manifest_digest,
                {"config": config_digest, "mediaType": media_type, "added": now_rfc3339()},
            )
            for t in tags or []:
                refs["tags"][str(t)] = manifest_digest
        return self._record(manifest_digest, entry, refs)

    def _record(self, mdigest: str, entry: dict[str, Any], refs: dict[str, Any]) -> ImageRecord:
        manifest = oci.load_json(self.read_blob(mdigest), f"manifest {mdigest}")
        config = oci.load_json(self.read_blob(entry["config"]), f"config {entry['config']}")
        tags = sorted(t for t, d in refs["tags"].items() if d == mdigest)
        return ImageRecord(
            mdigest,
            entry.get("mediaType", oci.OCI_MANIFEST),
            manifest,
            entry["config"],
            config,
            tags,
            entry.get("added", ""),
        )

    def images(self) -> list[ImageRecord]:
        refs = self.load_refs()
        out = [self._record(d, e, refs) for d, e in refs["images"].items()]
        out.sort(key=lambda r: r.config.get("created", ""), reverse=True)
        return out

    def _lookup(self, refs: dict[str, Any], text: str) -> str:
        """Manifest digest for a name[:tag], name@digest, full or short image ID."""
        images: dict[str, Any] = refs["images"]
        ident = text[len("sha256:") :] if text.startswith("sha256:") else text
        if 1 <= len(ident) <= 64 and all(c in "0123456789abcdef" for c in ident):
            hits = {
                m
                for m, e in images.items()
                if e["config"][7:].startswith(ident) or m[7:].startswith(ident)
            }
            if len(hits) == 1:
                return hits.pop()
            if len(hits) > 1 and len(ident) < 64:
                raise ImageNotFound(f"ambiguous image ID prefix {text!r}: {len(hits)} images match")
            if len(hits) > 1:
                return sorted(hits)[0]
        try:
            ref = parse(text)
        except InvalidReference:
            if ident and all(c in "0123456789abcdef" for c in ident):
                raise ImageNotFound(f"No such image: {text}") from None
            raise
        if ref.digest is not None:
            if ref.digest in images:
                return ref.digest
            # NAME@DIGEST as the registry named it when pulled (an index's digest).
            pulled_as = f"{ref.name}@{ref.digest}"
            for mdigest, entry in images.items():
                if pulled_as in entry.get("repoDigests", ()):
                    return str(mdigest)
            raise ImageNotFound(f"No such image: {text}")
        digest = refs["tags"].get(str(ref))
        if digest is None:
            raise ImageNotFound(f"No such image: {ref.familiar()}")
        return str(digest)

    def get(self, text: str) -> ImageRecord:
        refs = self.load_refs()
        digest = self._lookup(refs, text)
        entry = refs["images"].get(digest)
        if entry is None:
            raise StoreError(f"tag {text} points at {digest}, which is not in the store")
        return self._record(digest, entry, refs)

    def tag(self, source: str, target: str) -> ImageRecord:
        ref = parse(target)
        if ref.digest is not None:
            raise InvalidReference(f"refusing to create a tag with a digest reference: {target}")
        with self.update_refs() as refs:
            digest = self._lookup(refs, source)
            refs["tags"][str(ref)] = digest
        return self.get(digest)

    def containers_using(self, manifest_digest: str, config_digest: str) -> list[str]:
        out: list[str] = []
        cdir = self.root / "containers"
        if not cdir.is_dir():
            return out
        for meta in cdir.glob("*/container.json"):
            try:
                c = json.loads(meta.read_bytes())
            except (OSError, ValueError):
                continue
            if c.get("image") in (manifest_digest, config_digest):
                out.append(str(c.get("id", meta.parent.name)))
        return out

    def remove(self, text: str, *, force: bool = False) -> list[tuple[str, str]]:
        """`rmi`: untag, and delete the image once no tag is left. Returns Docker's
        ("Untagged"|"Deleted", what) lines. Content is collected right after, if no writer runs."""
        events: list[tuple[str, str]] = []
        with self.update_refs() as refs:
            digest = self._lookup(refs, text)
            entry = refs["images"][digest]
            tags = sorted(t for t, d in refs["tags"].items() if d == digest)
            by_name = False
            try:
                ref = parse(text)
                by_name = ref.digest is None and str(ref) in refs["tags"]
            except InvalidReference:
                pass
            users = self.containers_using(digest, entry["config"])
            if by_name and len(tags) > 1:
                del refs["tags"][str(parse(text))]
                events.append(("Untagged", parse(text).familiar()))
                return events
            if users and not force:
                raise ImageInUse(
                    f"conflict: unable to remove image {text} (must be forced) - "
                    f"image is being used by container {users[0][:12]}"
                )
            if not by_name and len(tags) > 1 and not force:
                raise ImageInUse(
                    f"conflict: unable to delete {entry['config'][7:19]} (must be forced) - "
                    f"image is referenced in multiple repositories"
                )
            for t in tags:
                del refs["tags"][t]
                events.append(("Untagged", parse(t).familiar()))
            del refs["images"][digest]
            events.append(("Deleted", entry["config"]))
        self.gc(wait=False)
        return events

    def prune_images(self, *, all_unused: bool = False) -> GCResult:
        """`image prune`: drop dangling images (no tag) or, with `all_unused`, every image no
        container uses; then collect unreferenced content."""
        removed = []
        with self.update_refs() as refs:
            tagged = set(refs["tags"].values())
            for digest, entry in list(refs["images"].items()):
                if self.containers_using(digest, entry["config"]):
                    continue
                if all_unused or digest not in tagged:
                    for t in [t for t, d in refs["tags"].items() if d == digest]:
                        del refs["tags"][t]
                    del refs["images"][digest]
                    removed.append(entry["config"])
        result = self.gc(wait=True)
        result.images_removed = removed
        return result

    # -- garbage collection and checks -----------------------------------------------------
    def _referenced(self, refs: dict[str, Any]) -> tuple[set[str], set[str]]:
        """(blob digests, diff IDs) reachable from every image and container."""
        blobs: set[str] = set()
        diff_ids: set[str] = set()
        for digest, entry in refs["images"].items():
            blobs.add(digest)
            blobs.add(entry["config"])
            with contextlib.suppress(Exception):
                manifest = json.loads(self.read_blob(digest))
                for layer in manifest.get("layers", []):
                    blobs.add(layer["digest"])
                for extra in refs.get("indexes", {}).get(digest, []):
                    blobs.add(extra)
            with contextlib.suppress(Exception):
                config = json.loads(self.read_blob(entry["config"]))
                diff_ids.update(config.get("rootfs", {}).get("diff_ids", []))
        for meta in (self.root / "containers").glob("*/container.json"):
            with contextlib.suppress(OSError, ValueError):
                diff_ids.update(json.loads(meta.read_bytes()).get("diff_ids", []))
        # Build cache records are roots too (`pyrun builder prune` drops them): a cached step
        # keeps its layers, so a rebuild after `image prune` still hits.
        for rec in (self.root / "build-cache").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                data = json.loads(rec.read_bytes())
                diff_ids.update(data["config"].get("rootfs", {}).get("diff_ids", []))
                blobs.update(d["digest"] for d in data["layers"])
        return blobs, diff_ids

    def gc(self, *, wait: bool = True) -> GCResult:
        """Mark and sweep: delete blobs and unpacked layers no image or container references,
        and leftovers in tmp/. With wait=False, skip (return empty) while a writer is running."""
        result = GCResult()
        self.ensure()
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return result
            with self._meta_lock():
                blobs, diff_ids = self._referenced(self.load_refs())
                for path in self.root.glob(".tmp-*"):  # a refs.json write cut short
                    remove_tree(path)
            for path in (self.root / "blobs" / "sha256").iterdir():
                if f"sha256:{path.name}" not in blobs:
                    with contextlib.suppress(FileNotFoundError):
                        result.bytes_freed += path.stat().st_size
                        path.unlink()
                        result.blobs_removed += 1
            for path in (self.root / "layers" / "sha256").iterdir():
                if f"sha256:{path.name}" not in diff_ids:
                    with contextlib.suppress(FileNotFoundError, OSError, ValueError):
                        meta = json.loads((path / "layer.json").read_bytes())
                        result.bytes_freed += int(meta.get("uncompressed_size", 0))
                    remove_tree(path)
                    result.layers_removed += 1
            for path in (self.root / "tmp").iterdir():
                remove_tree(path)
            self.sweep_run_root()
            # Bytes of interrupted pulls: no pull runs now (GC holds the writers' lock).
            partial = self.root / "partial"
            if partial.is_dir():
                for path in partial.iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        result.bytes_freed += path.stat().st_size
                        path.unlink()
        finally:
            os.close(fd)
        return result

    def check(self) -> list[str]:
        """Verify every blob against its digest and every reference; returns the problems."""
        from pyrun import _core

        self.ensure()
        problems: list[str] = []
        blob_dir = self.root / "blobs" / "sha256"
        paths = sorted(p for p in blob_dir.iterdir() if not p.name.startswith("."))
        digests = _core.sha256_files([str(p) for p in paths]) if paths else []
        for p, d in zip(paths, digests, strict=True):
            if d != f"sha256:{p.name}":
                problems.append(f"blob sha256:{p.name} is corrupt: its content hashes to {d}")
        try:
            refs = self.load_refs()
        except StoreError as e:
            return [*problems, str(e)]
        for tag, digest in refs["tags"].items():
            if digest not in refs["images"]:
                problems.append(f"tag {tag} points at unknown image {digest}")
        for digest, entry in refs["images"].items():
            try:
                manifest = oci.load_json(self.read_blob(digest), f"manifest {digest}")
                config = oci.load_json(self.read_blob(entry["config"]), f"config {entry['config']}")
            except Exception as e:
                problems.append(f"image {digest}: {e}")
                continue
            for layer in manifest.get("layers", []):
                if not self.has_blob(layer["digest"]):
                    problems.append(f"image {digest}: layer blob {layer['digest']} is missing")
            for diff_id in config.get("rootfs", {}).get("diff_ids", []):
                if not self.has_layer(diff_id):
                    problems.append(f"image {digest}: unpacked layer {diff_id} is missing")
        for path in (self.root / "layers" / "sha256").iterdir():
            if not (path / "layer.json").is_file() or not (path / "diff").is_dir():
                problems.append(f"unpacked layer sha256:{path.name} is incomplete")
        return problems

    def disk_usage(self) -> dict[str, int]:
        self.ensure()
        return {"blobs": tree_size(self.root / "blobs"), "layers": tree_size(self.root / "layers")}
