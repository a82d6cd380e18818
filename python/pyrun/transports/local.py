"""The local store as an image source and destination."""

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


class StoreSource:
    def __init__(self, store: Store) -> None:
        self.store = store

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

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lease = store.writing()
        self._lease.__enter__()
        self.added: list[str] = []

    def has_layer(self, descriptor: dict[str, Any], diff_id: str | None) -> bool:
        return (
            self.store.has_blob(descriptor["digest"])
            and diff_id is not None
            and self.store.has_layer(diff_id)
        )

    def put_layer(self, layer: SourceLayer) -> LayerResult:
        desc = layer.descriptor
        if desc is not None and layer.diff_id and self.store.has_layer(layer.diff_id):
            # Unpacked already (the same diff under another compression): keep the blob only.
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
            return LayerResult(got, layer.diff_id, desc["size"], desc["mediaType"])
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
        self.store.add_image(digest, names)
        self.added.append(digest)
        return digest

    def commit(self) -> None:
        self._lease.__exit__(None, None, None)

    def abort(self) -> None:
        self._lease.__exit__(None, None, None)
