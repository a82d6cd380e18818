"""The local store as an image source and destination.

A multi-platform image (an image index, `pull --all-platforms`, `image copy --all`) is kept
whole: the image for this host (or, with none, the index's first) is an ordinary image,
unpacked and tagged; the index and the other platforms' manifests, configs and layer blobs
(not unpacked) are kept beside it, listed in refs.json under `indexes[<that image>]` (so the
garbage collector keeps them) and named by its entry's `index`. `push` and `image copy` to a
registry or an OCI layout send the index whole again; `save` to a docker-archive, which holds
one image per name, the host's image."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from pyrun import _core, oci
from pyrun.errors import DigestMismatch
from pyrun.reference import Reference
from pyrun.store import Store
from pyrun.transports.base import Blob, LayerResult, SourceImage, SourceLayer


def host_image_of(index: dict[str, Any]) -> str:
    """The digest of the image an index is run as here: this host's platform (Docker's
    fallbacks), else its first image."""
    from pyrun.errors import InvalidArchive

    try:
        return str(oci.select_manifest(index, None)["digest"])
    except InvalidArchive:
        for m in index.get("manifests", []):
            if m.get("mediaType") in oci.MANIFEST_TYPES:
                return str(m["digest"])
        raise


def image_for(store: Store, digest: str) -> str:
    """The image a copy's digest stands for: itself, or, for an index kept whole, the image
    it is run as."""
    refs = store.load_refs()
    if digest in refs["images"]:
        return digest
    for image, entry in refs["images"].items():
        if entry.get("index") == digest:
            return str(image)
    return digest


class StoreSource:
    def __init__(self, store: Store) -> None:
        self.store = store

    def index(self, ref: str | None) -> tuple[bytes, str, list[SourceImage]] | None:
        """The index an image was pulled with (`--all-platforms`), with every image in it;
        None for an image on its own."""
        if ref is None:
            return None
        rec = self.store.get(ref)
        entry = self.store.load_refs()["images"].get(rec.manifest_digest, {})
        idigest = entry.get("index")
        if not idigest:
            return None
        data = self.store.read_blob(idigest)
        index = oci.load_json(data, f"index {idigest}")
        children = []
        for m in index.get("manifests", []):
            mdigest = str(m["digest"])
            mdata = self.store.read_blob(mdigest)
            manifest = oci.load_json(mdata, f"manifest {mdigest}")
            config = self.store.read_blob(manifest["config"]["digest"])
            diff_ids = oci.load_json(config, "image config").get("rootfs", {}).get("diff_ids", [])
            layers = [
                SourceLayer(Blob(str(self.store.blob_path(d["digest"]))), d, diff)
                for d, diff in zip(manifest.get("layers", []), diff_ids, strict=False)
            ]
            media_type = oci.manifest_media_type(mdata, m.get("mediaType"))
            children.append(SourceImage(mdata, media_type, config, layers, []))
        return data, oci.manifest_media_type(data, entry.get("indexMediaType")), children

    def images(self, ref: str | None = None) -> list[SourceImage]:
        records = [self.store.get(ref)] if ref is not None else self.store.images()
        out = []
        for rec in records:
            mdigest = rec.manifest_digest
            layers = [
                SourceLayer(Blob(str(self.store.blob_path(d["digest"]))), d, diff)
                for d, diff in zip(rec.layers, rec.diff_ids, strict=False)
            ]
            from pyrun.reference import parse

            out.append(
                SourceImage(
                    self.store.read_blob(mdigest),
                    rec.media_type,
                    self.store.read_blob(rec.config_digest),
                    layers,
                    [parse(t) for t in rec.tags],
                )
            )
        return out

    def close(self) -> None:
        pass


class StoreDestination:
    """Writes into the store under a writer's lease; tags are applied by `put_manifest`."""

    takes_index = True  # an index is kept whole (see the module's docstring)
    in_index = False  # set while the images of an index are copied

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lease = store.writing()
        self._lease.__enter__()
        self.added: list[str] = []
        self.repo_digest: str | None = None  # NAME@DIGEST the registry knows the image by
        self._blobs_only = False  # the image being copied is another platform's: not unpacked
        self._children: dict[str, list[str]] = {}  # image of an index -> its blobs

    def index_child(self, manifest: bytes, index: bytes) -> None:
        """The next image copied belongs to `index`: this host's is unpacked, the others' are
        kept as blobs."""
        self._blobs_only = oci.sha256_bytes(manifest) != host_image_of(
            oci.load_json(index, "image index")
        )

    def has_layer(self, descriptor: dict[str, Any], diff_id: str | None) -> bool:
        if not self.store.has_blob(descriptor["digest"]):
            return False
        return self._blobs_only or (diff_id is not None and self.store.has_layer(diff_id))

    def _keep_blob(self, layer: SourceLayer, desc: dict[str, Any]) -> str:
        tmp = self.store.new_temp(".blob")
        try:
            with layer.blob.open() as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got = _core.sha256_file(str(tmp))
            if got != desc["digest"]:
                raise DigestMismatch(f"digest mismatch: expected {desc['digest']}, got {got}")
            self.store.commit_blob_file(tmp, got)
        finally:
            if tmp.exists():
                os.unlink(tmp)
        return got

    def put_layer(self, layer: SourceLayer) -> LayerResult:
        desc = layer.descriptor
        if desc is not None and (
            self._blobs_only or (layer.diff_id and self.store.has_layer(layer.diff_id))
        ):
            # Another platform's layer, or unpacked already (the same diff under another
            # compression): keep the blob only.
            got = self._keep_blob(layer, desc)
            return LayerResult(got, layer.diff_id or got, desc["size"], desc["mediaType"])
        pipe = getattr(layer.blob, "pipe", None)
        if pipe is not None:  # a remote blob: unpacked while it downloads
            partial = (
                self.store.root / "partial" / desc["digest"].replace(":", "-") if desc else None
            )
            fd, thread, errors = pipe(partial)
            failure: BaseException | None = None
            try:
                res = self.store.unpack_layer(
                    fd, digest=desc["digest"] if desc else None, diff_id=layer.diff_id
                )
            except BaseException as e:
                failure = e
            finally:
                os.close(fd)
                thread.join()
            if errors:  # the download failed: that is the error (its partial bytes stay)
                raise errors[0]
            if failure is not None:
                if isinstance(failure, DigestMismatch) and partial is not None:
                    # The kept bytes may be what is wrong: do not resume from them again.
                    with contextlib.suppress(FileNotFoundError):
                        partial.unlink()
                raise failure
        else:
            res = self.store.unpack_layer(
                layer.blob.path,
                offset=layer.blob.offset,
                length=layer.blob.length,
                digest=desc["digest"] if desc else None,
                diff_id=layer.diff_id,
            )
        media_type = desc["mediaType"] if desc else oci.OCI_LAYER_BY_COMPRESSION[res["compression"]]
        return LayerResult(res["digest"], res["diff_id"], res["size"], media_type)

    def put_blob(self, data: bytes, digest: str, media_type: str) -> None:
        self.store.put_blob_bytes(data, digest)

    def put_manifest(self, data: bytes, media_type: str, names: list[Reference]) -> str:
        digest = self.store.put_blob_bytes(data)
        if self.in_index:  # an image of an index: recorded with the index
            manifest = oci.load_json(data, "manifest")
            self._children[digest] = [
                digest,
                str(manifest["config"]["digest"]),
                *(str(d["digest"]) for d in manifest.get("layers", [])),
            ]
            return digest
        if media_type in oci.INDEX_TYPES:
            return self._put_index(data, digest, media_type, names)
        self.store.add_image(digest, names)
        refs = self.store.load_refs()
        entry = refs["images"].get(digest, {})
        # (An `indexes` entry without `index`: left by an rmi of the image pulled whole.)
        if "index" in entry or digest in refs.get("indexes", {}) or (
                self.repo_digest and self.repo_digest not in entry.get("repoDigests", [])):  # fmt: skip
            with self.store.update_refs() as refs:  # named alone now: no longer the index's
                refs["images"][digest].pop("index", None)
                refs.get("indexes", {}).pop(digest, None)
                self._note_repo_digest(refs["images"][digest])
        self.added.append(digest)
        return digest

    def _note_repo_digest(self, entry: dict[str, Any]) -> None:
        if self.repo_digest:
            name = self.repo_digest.split("@")[0]
            old = [d for d in entry.get("repoDigests", []) if d.split("@")[0] != name]
            entry["repoDigests"] = sorted([*old, self.repo_digest])

    def _put_index(self, data: bytes, digest: str, media_type: str, names: list[Reference]) -> str:
        host = host_image_of(oci.load_json(data, "image index"))
        if host not in self._children:
            from pyrun.errors import InvalidArchive

            raise InvalidArchive(f"index {digest}: its image {host} was not copied")
        self.store.add_image(host, names)
        extra = [digest] + [b for d, blobs in self._children.items() if d != host for b in blobs]
        with self.store.update_refs() as refs:
            refs["images"][host]["index"] = digest
            refs["images"][host]["indexMediaType"] = media_type
            self._note_repo_digest(refs["images"][host])
            refs.setdefault("indexes", {})[host] = sorted(set(extra))
        self.added.append(host)
        return digest

    def commit(self) -> None:
        self._lease.__exit__(None, None, None)

    def abort(self) -> None:
        self._lease.__exit__(None, None, None)
