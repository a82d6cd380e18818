"""OCI image layouts and docker-archive tars, as sources and destinations.

Sources read `index.json` (OCI layout, in a directory or a tar) and `manifest.json` (every
`docker save` format: Docker >= 25 writes both, older Docker only manifest.json with per-layer
directories). Destinations write an OCI layout (`oci:` dir, `oci-archive:` tar) and a
docker-archive tar in Docker 25's shape: the OCI layout plus manifest.json and repositories."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from pyrun import _core, oci
from pyrun.errors import ImageNotFound, InvalidArchive, InvalidReference
from pyrun.reference import Reference, parse
from pyrun.store.fsutil import canonical_json, fsync_dir
from pyrun.transports.base import Blob, LayerResult, SourceImage, SourceLayer
from pyrun.transports.trees import DirTree, TarTree, Tree, read

IMAGE_NAME_ANNOTATION = "io.containerd.image.name"


def _blob_path(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    if not alg or not hexpart or "/" in digest or ".." in digest:
        raise InvalidArchive(f"malformed digest {digest!r}")
    return f"blobs/{alg}/{hexpart}"


def _entry_key(entry: dict[str, Any]) -> str | None:
    ann = entry.get("annotations") or {}
    return ann.get(IMAGE_NAME_ANNOTATION) or ann.get(oci.REF_NAME_ANNOTATION)


def _names_from_annotations(ann: dict[str, str], default_name: str | None) -> list[Reference]:
    for key in (IMAGE_NAME_ANNOTATION, oci.REF_NAME_ANNOTATION):
        value = ann.get(key)
        if not value:
            continue
        with contextlib.suppress(InvalidReference):
            if key == oci.REF_NAME_ANNOTATION and ("/" not in value and ":" not in value):
                if default_name is None:
                    continue
                return [parse(default_name).with_tag(value)]
            return [parse(value)]
    return []


class LayoutSource:
    """An OCI image layout (optionally with Docker's manifest.json beside it)."""

    def __init__(self, tree: Tree, platform: dict[str, str] | None = None) -> None:
        self.tree = tree
        self.platform = platform

    def _image_from_manifest(self, desc: dict[str, Any], names: list[Reference]) -> SourceImage:
        data = read(self.tree, _blob_path(desc["digest"]))
        if oci.sha256_bytes(data) != desc["digest"]:
            raise InvalidArchive(
                f"{self.tree.label}: manifest {desc['digest']} does not match its digest"
            )
        media_type = oci.manifest_media_type(data, desc.get("mediaType"))
        if media_type in oci.INDEX_TYPES:
            inner = oci.select_manifest(oci.load_json(data, "image index"), self.platform)
            return self._image_from_manifest(inner, names)
        manifest = oci.load_json(data, f"manifest {desc['digest']}")
        cdesc = manifest.get("config") or {}
        if "digest" not in cdesc:
            raise InvalidArchive(f"{self.tree.label}: manifest {desc['digest']} has no config")
        config = read(self.tree, _blob_path(cdesc["digest"]))
        if oci.sha256_bytes(config) != cdesc["digest"]:
            raise InvalidArchive(
                f"{self.tree.label}: config {cdesc['digest']} does not match its digest"
            )
        diff_ids = oci.load_json(config, "image config").get("rootfs", {}).get("diff_ids", [])
        layers_desc = manifest.get("layers", [])
        if len(diff_ids) != len(layers_desc):
            raise InvalidArchive(
                f"{self.tree.label}: manifest has {len(layers_desc)} layers but config lists {len(diff_ids)} diff_ids"
            )
        layers = [
            SourceLayer(self.tree.blob(_blob_path(ld["digest"])), ld, diff)
            for ld, diff in zip(layers_desc, diff_ids, strict=True)
        ]
        return SourceImage(data, media_type, config, layers, names)

    def images(self, ref: str | None = None) -> list[SourceImage]:
        index = oci.load_json(read(self.tree, "index.json"), f"{self.tree.label}: index.json")
        # Entries with an artifactType are referrers (signatures, SBOMs), not images.
        entries = [d for d in index.get("manifests", []) if "artifactType" not in d]
        out = []
        for desc in entries:
            ann = desc.get("annotations") or {}
            if ref is not None and ref not in (
                ann.get(oci.REF_NAME_ANNOTATION),
                ann.get(IMAGE_NAME_ANNOTATION),
            ):
                continue
            out.append(self._image_from_manifest(desc, _names_from_annotations(ann, None)))
        if ref is None and not out:
            raise InvalidArchive(f"{self.tree.label}: index.json lists no images")
        if ref is not None and not out:
            if ref == "" and len(entries) == 1:
                return [self._image_from_manifest(entries[0], [])]
            raise ImageNotFound(f"{self.tree.label}: no image tagged {ref!r}")
        return out

    def referrers(self, digest: str) -> list[SourceImage]:
        """The manifests index.json lists whose `subject` is `digest` (how `oras` and pyrun
        keep referrers in a layout)."""
        index = oci.load_json(read(self.tree, "index.json"), f"{self.tree.label}: index.json")
        out = []
        for desc in index.get("manifests", []):
            if desc.get("mediaType") not in oci.MANIFEST_TYPES or desc.get("annotations"):
                continue
            data = read(self.tree, _blob_path(desc["digest"]))
            if oci.sha256_bytes(data) != desc["digest"]:
                raise InvalidArchive(
                    f"{self.tree.label}: manifest {desc['digest']} does not match its digest"
                )
            manifest = oci.load_json(data, f"manifest {desc['digest']}")
            if (manifest.get("subject") or {}).get("digest") != digest:
                continue
            config = read(self.tree, _blob_path(manifest["config"]["digest"]))
            layers = [
                SourceLayer(self.tree.blob(_blob_path(ld["digest"])), ld, None)
                for ld in manifest.get("layers", [])
            ]
            out.append(SourceImage(data, desc["mediaType"], config, layers, []))
        return out

    def index(self, ref: str | None) -> tuple[bytes, str, list[SourceImage]] | None:
        """When `ref` names an image index (a multi-platform image): its bytes, media type
        and every image it lists; None when it names a single image."""
        index = oci.load_json(read(self.tree, "index.json"), f"{self.tree.label}: index.json")
        entries = [
            d
            for d in index.get("manifests", [])
            if ("artifactType" not in d and ref in (None, ""))
            or ref
            in (
                (d.get("annotations") or {}).get(oci.REF_NAME_ANNOTATION),
                (d.get("annotations") or {}).get(IMAGE_NAME_ANNOTATION),
            )
        ]
        if len(entries) != 1:
            return None
        data = read(self.tree, _blob_path(entries[0]["digest"]))
        if oci.sha256_bytes(data) != entries[0]["digest"]:
            raise InvalidArchive(
                f"{self.tree.label}: index {entries[0]['digest']} does not match its digest"
            )
        media_type = oci.manifest_media_type(data, entries[0].get("mediaType"))
        if media_type not in oci.INDEX_TYPES:
            return None
        children = [
            self._image_from_manifest(m, [])
            for m in oci.load_json(data, "image index").get("manifests", [])
        ]
        return data, media_type, children

    def close(self) -> None:
        pass


class DockerArchiveSource:
    """`docker save` output of any age. With index.json present (Docker >= 25) the original
    manifests are used, so digests survive; otherwise an OCI manifest is synthesised."""

    def __init__(self, tree: Tree, platform: dict[str, str] | None = None) -> None:
        self.tree = tree
        self.platform = platform

    def _entries(self) -> list[dict[str, Any]]:
        data = read(self.tree, "manifest.json")
        try:
            entries = json.loads(data)
        except ValueError as e:
            raise InvalidArchive(f"{self.tree.label}: manifest.json is not JSON ({e})") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InvalidArchive(f"{self.tree.label}: manifest.json is not a list of images")
        return entries

    def images(self, ref: str | None = None) -> list[SourceImage]:
        by_config: dict[str, SourceImage] = {}
        if self.tree.exists("index.json") and self.tree.exists("oci-layout"):
            for img in LayoutSource(self.tree, self.platform).images():
                cdigest = oci.load_json(img.manifest or b"{}", "manifest")["config"]["digest"]
                by_config[cdigest] = img
        out = []
        want = parse(ref) if ref else None
        for entry in self._entries():
            names = []
            for t in entry.get("RepoTags") or []:
                with contextlib.suppress(InvalidReference):
                    names.append(parse(t))
            if want is not None and want not in names:
                continue
            config_path = entry.get("Config")
            if not isinstance(config_path, str):
                raise InvalidArchive(f"{self.tree.label}: manifest.json entry has no Config")
            config = read(self.tree, config_path)
            cdigest = oci.sha256_bytes(config)
            if cdigest in by_config:
                img = by_config[cdigest]
                img.names = names
                out.append(img)
                continue
            out.append(self._synthesise(entry, config, cdigest, names))
        if not out:
            raise ImageNotFound(
                f"{self.tree.label}: "
                + (f"no image tagged {ref}" if ref else "archive holds no images")
            )
        return out

    def _synthesise(
        self, entry: dict[str, Any], config: bytes, cdigest: str, names: list[Reference]
    ) -> SourceImage:
        diff_ids = oci.load_json(config, "image config").get("rootfs", {}).get("diff_ids", [])
        paths = entry.get("Layers") or []
        if len(paths) != len(diff_ids):
            raise InvalidArchive(
                f"{self.tree.label}: manifest.json lists {len(paths)} layers but the config has {len(diff_ids)} diff_ids"
            )
        layers = []
        descs = []
        for path, diff_id in zip(paths, diff_ids, strict=True):
            blob = self.tree.blob(path)
            comp = _core.detect_compression(blob.head())
            # An uncompressed layer's digest is its DiffID (checked while unpacking).
            digest = (
                diff_id
                if comp == "none"
                else _core.sha256_file(blob.path, blob.offset, blob.length)
            )
            d = oci.descriptor(oci.OCI_LAYER_BY_COMPRESSION[comp], digest, blob.size())
            descs.append(d)
            layers.append(SourceLayer(blob, d, diff_id))
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": oci.descriptor(oci.OCI_CONFIG, cdigest, len(config)),
            "layers": descs,
        }
        return SourceImage(canonical_json(manifest), oci.OCI_MANIFEST, config, layers, names)

    def close(self) -> None:
        pass


# -- destinations --------------------------------------------------------------------------------
class _Checked:
    """A blob's bytes on their way into a layout, hashed: `verify` raises unless they match
    the digest the path names (a registry or an archive may serve other bytes)."""

    def __init__(self, f: Any, name: str) -> None:
        import hashlib

        self.f = f
        self.name = name
        self.hash = hashlib.sha256() if name.startswith("blobs/sha256/") else None

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.f.read(n)
        if self.hash is not None:
            self.hash.update(data)
        return data

    def verify(self) -> None:
        if self.hash is None:
            return
        want = "sha256:" + self.name.rsplit("/", 1)[1]
        got = "sha256:" + self.hash.hexdigest()
        if got != want:
            from pyrun.errors import DigestMismatch

            raise DigestMismatch(f"digest mismatch: expected {want}, got {got}")


class _LayoutWriter:
    """Collects blobs and manifests, then writes an OCI layout (plus Docker's manifest.json when
    `docker` is set) into a directory or a tar file. Nothing is visible before `commit`."""

    def __init__(self, target: Path, *, as_tar: bool, docker: bool, tag: str | None = None) -> None:
        self.target = target
        self.as_tar = as_tar
        self.docker = docker
        self.tag = tag
        self.blobs: dict[str, Blob | bytes] = {}
        self.manifests: list[tuple[dict[str, Any], list[Reference], str, list[str]]] = []
        self.referrers: list[dict[str, Any]] = []  # artifacts with a subject (add_referrer)
        self.existing: DirTree | None = None
        # An OCI layout holds image indexes: their images go in as blobs only (`in_index`),
        # then the index is an entry of index.json like any image.
        self.takes_index = not docker
        self.keeps_referrers = not docker  # as index.json entries without a name
        self.in_index = False
        if not as_tar and (target / "index.json").is_file():
            self.existing = DirTree(target)

    def has_layer(self, descriptor: dict[str, Any], diff_id: str | None) -> bool:
        if descriptor["digest"] in self.blobs:
            return True
        return self.existing is not None and self.existing.exists(_blob_path(descriptor["digest"]))

    def put_layer(self, layer: SourceLayer) -> LayerResult:
        desc = layer.descriptor
        if desc is None:
            # A rootfs tar: hash it now; only uncompressed input has a knowable DiffID here.
            comp = _core.detect_compression(layer.blob.head())
            if comp != "none":
                raise InvalidArchive(
                    "a compressed rootfs tar can only be imported into the local store"
                )
            digest = _core.sha256_file(layer.blob.path, layer.blob.offset, layer.blob.length)
            desc = oci.descriptor(oci.OCI_LAYER, digest, layer.blob.size())
        self.blobs[desc["digest"]] = layer.blob
        return LayerResult(
            desc["digest"], layer.diff_id or desc["digest"], desc["size"], desc["mediaType"]
        )

    def put_blob(self, data: bytes, digest: str, media_type: str) -> None:
        self.blobs[digest] = data

    def put_manifest(self, data: bytes, media_type: str, names: list[Reference]) -> str:
        digest = oci.sha256_bytes(data)
        self.blobs[digest] = data
        if self.in_index:
            return digest
        if media_type in oci.INDEX_TYPES:
            self.manifests.append((oci.descriptor(media_type, digest, len(data)), names, "", []))
            return digest
        manifest = oci.load_json(data, "manifest")
        layer_paths = [_blob_path(ld["digest"]) for ld in manifest.get("layers", [])]
        desc = oci.descriptor(media_type, digest, len(data))
        self.manifests.append((desc, names, _blob_path(manifest["config"]["digest"]), layer_paths))
        return digest

    def add_referrer(self, manifest: bytes, media_type: str) -> None:
        """An artifact (its blobs put already) listed in index.json without a name."""
        from pyrun.registry.client import referrer_descriptor

        digest = oci.sha256_bytes(manifest)
        obj = oci.load_json(manifest, "manifest")
        desc = referrer_descriptor(obj, media_type, digest, len(manifest))
        desc.pop("annotations", None)  # unnamed: annotations in index.json would name it
        self.referrers.append(desc)

    def _index_entries(self) -> list[dict[str, Any]]:
        out = []
        if self.existing is not None:
            old = oci.load_json(read(self.existing, "index.json"), "index.json")
            out = list(old.get("manifests", []))
        for desc, names, _cfg, _layers in self.manifests:
            tags: list[str | None] = [str(n) for n in names] or [None]
            for name in tags:
                entry = dict(desc)
                ann: dict[str, str] = {}
                if self.tag is not None:
                    ann[oci.REF_NAME_ANNOTATION] = self.tag
                elif name is not None:
                    ann[IMAGE_NAME_ANNOTATION] = name
                    ann[oci.REF_NAME_ANNOTATION] = parse(name).tag or "latest"
                if ann:
                    entry["annotations"] = ann
                    # A name points at one image: the newest write wins.
                    out = [e for e in out if _entry_key(e) != _entry_key(entry)]
                out.append(entry)
        for desc in self.referrers:  # unnamed, listed once
            out = [e for e in out if e.get("annotations") or e["digest"] != desc["digest"]]
            out.append(desc)
        return out

    def _files(self) -> list[tuple[str, Blob | bytes]]:
        files: list[tuple[str, Blob | bytes]] = [
            ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
            (
                "index.json",
                canonical_json(
                    {
                        "schemaVersion": 2,
                        "mediaType": oci.OCI_INDEX,
                        "manifests": self._index_entries(),
                    }
                ),
            ),
        ]
        if self.docker:
            mj = [
                {"Config": cfg, "RepoTags": [n.familiar() for n in names], "Layers": layers}
                for _d, names, cfg, layers in self.manifests
            ]
            repos: dict[str, dict[str, str]] = {}
            for _d, names, _cfg, layers in self.manifests:
                for n in names:
                    if layers and n.tag:
                        repos.setdefault(n.familiar().rsplit(":", 1)[0], {})[n.tag] = layers[
                            -1
                        ].rsplit("/", 1)[-1]
            files.append(("manifest.json", canonical_json(mj)))
            files.append(("repositories", canonical_json(repos)))
        for digest in sorted(self.blobs):
            files.append((_blob_path(digest), self.blobs[digest]))
        return files

    def commit(self) -> None:
        if self.as_tar:
            self._commit_tar()
        else:
            self._commit_dir()

    def _commit_tar(self) -> None:
        tmp = self.target.with_name(f".{self.target.name}.tmp-{os.getpid()}")
        try:
            with (
                open(tmp, "wb") as raw,
                tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf,
            ):
                dirs_done: set[str] = set()
                # Blobs first, the metadata that names them after (a stable sort keeps the rest).
                files = sorted(self._files(), key=lambda f: not f[0].startswith("blobs/"))
                for name, content in files:
                    parent = name.rsplit("/", 1)[0] if "/" in name else ""
                    parts = parent.split("/") if parent else []
                    for i in range(1, len(parts) + 1):
                        d = "/".join(parts[:i])
                        if d not in dirs_done:
                            ti = tarfile.TarInfo(d + "/")
                            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                            tf.addfile(ti)
                            dirs_done.add(d)
                    ti = tarfile.TarInfo(name)
                    ti.mode = 0o644
                    if isinstance(content, bytes):
                        ti.size = len(content)
                        tf.addfile(ti, io.BytesIO(content))
                    else:
                        ti.size = content.size()
                        with content.open() as f:
                            checked = _Checked(f, name)
                            tf.addfile(ti, checked)
                            checked.verify()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, self.target)
            fsync_dir(self.target.parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _commit_dir(self) -> None:
        import shutil
        import tempfile

        self.target.mkdir(parents=True, exist_ok=True)
        # Blobs first (each checked, then renamed in), index.json last: a copy that fails
        # leaves no index naming what is not there.
        for name, content in sorted(self._files(), key=lambda f: not f[0].startswith("blobs/")):
            dest = self.target / name
            if name.startswith("blobs/") and dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    if isinstance(content, bytes):
                        out.write(content)
                    else:
                        with content.open() as f:
                            checked = _Checked(f, name)
                            shutil.copyfileobj(checked, out, 1 << 20)
                            checked.verify()
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def abort(self) -> None:
        self.blobs.clear()
        self.manifests.clear()
        self.referrers.clear()


def oci_dir_destination(path: Path, tag: str | None) -> _LayoutWriter:
    return _LayoutWriter(path, as_tar=False, docker=False, tag=tag)


def oci_archive_destination(path: Path, tag: str | None = None) -> _LayoutWriter:
    return _LayoutWriter(path, as_tar=True, docker=False, tag=tag)


def docker_archive_destination(path: Path) -> _LayoutWriter:
    return _LayoutWriter(path, as_tar=True, docker=True)


def open_archive(
    path: Path, platform: dict[str, str] | None = None
) -> LayoutSource | DockerArchiveSource:
    """A tar written by `docker save`, `podman save`, `skopeo copy` or `pyrun save`, either format."""
    tree = TarTree(path)
    if tree.exists("manifest.json"):
        return DockerArchiveSource(tree, platform)
    if tree.exists("index.json"):
        return LayoutSource(tree, platform)
    raise InvalidArchive(
        f"{path}: neither a docker-archive (manifest.json) nor an OCI layout (index.json)"
    )


def open_layout_dir(path: Path, platform: dict[str, str] | None = None) -> LayoutSource:
    if not (path / "index.json").is_file():
        raise InvalidArchive(f"{path}: not an OCI image layout (no index.json)")
    return LayoutSource(DirTree(path), platform)
