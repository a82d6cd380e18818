"""The public Python API, in docker-py's shape: `pyrun.Client().images.list()` and friends.
The CLI is a thin shell over this module; this module is thin over the store and transports."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from pyrun import oci
from pyrun.errors import APIError, ImageNotFound, InvalidReference, PyrunError
from pyrun.reference import Reference, parse
from pyrun.store import ImageRecord, Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyrun.network import Network, Networks
    from pyrun.runtime.containers import Container
    from pyrun.runtime.template import Sink
    from pyrun.transports.base import ImageDestination, ImageSource, SourceImage
    from pyrun.transports.copy import Progress


class Image:
    """An image in the store. `attrs` is what `pyrun image inspect` prints."""

    def __init__(self, client: Client, record: ImageRecord) -> None:
        self.client = client
        self.record = record

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def short_id(self) -> str:
        return self.record.id[7:19]

    @property
    def tags(self) -> list[str]:
        return [parse(t).familiar() for t in self.record.tags]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.record.config.get("config", {}).get("Labels") or {})

    @property
    def attrs(self) -> dict[str, Any]:
        rec = self.record
        cfg = rec.config
        store = self.client.store
        size = 0
        for diff_id in rec.diff_ids:
            with contextlib.suppress(OSError, ValueError):
                import json

                size += int(
                    json.loads((store.layer_path(diff_id) / "layer.json").read_bytes())[
                        "uncompressed_size"
                    ]
                )
        # As the registry named it when pulled (an index's digest, for a multi-platform
        # image), else this manifest's digest under each tag's name.
        known = store.load_refs()["images"].get(rec.manifest_digest, {}).get("repoDigests", [])
        names = {d.split("@")[0] for d in known}
        repo_digests = sorted(
            {*known, *(f"{parse(t).name}@{rec.manifest_digest}" for t in rec.tags
                       if parse(t).name not in names)}
        )  # fmt: skip
        return {
            "Id": rec.id,
            "RepoTags": self.tags,
            "RepoDigests": [parse(d).familiar() for d in repo_digests],
            "Parent": "",
            "Comment": next(
                (
                    h.get("comment", "")
                    for h in reversed(cfg.get("history", []))
                    if h.get("comment")
                ),
                "",
            ),
            "Created": cfg.get("created", ""),
            "Author": cfg.get("author", ""),
            "Config": cfg.get("config", {}),
            "Architecture": cfg.get("architecture", ""),
            "Variant": cfg.get("variant", ""),
            "Os": cfg.get("os", ""),
            "Size": size,
            "RootFS": {"Type": "layers", "Layers": rec.diff_ids},
            "Metadata": {"LastTagTime": rec.added},
            "Descriptor": oci.descriptor(
                rec.media_type, rec.manifest_digest, len(store.read_blob(rec.manifest_digest))
            ),
        }

    def history(self) -> list[dict[str, Any]]:
        """Newest first, as `docker history`: one row per history entry."""
        rec = self.record
        layers = list(zip(rec.layers, rec.diff_ids, strict=False))
        rows = []
        i = 0
        for h in rec.config.get("history", []) or [{}] * len(layers):
            size = 0
            if not h.get("empty_layer") and i < len(layers):
                size = int(layers[i][0].get("size", 0))
                i += 1
            rows.append(
                {
                    "Created": h.get("created", ""),
                    "CreatedBy": h.get("created_by", ""),
                    "Size": size,
                    "Comment": h.get("comment", ""),
                    "EmptyLayer": bool(h.get("empty_layer")),
                }
            )
        rows.reverse()
        if rows:
            rows[0]["Id"] = rec.id
        return rows

    def tag(self, repository: str, tag: str | None = None) -> bool:
        target = parse(repository, default_tag=tag is None)
        if tag is not None:
            target = target.with_tag(tag)
        self.record = self.client.store.tag(self.record.manifest_digest, str(target))
        return True

    def reload(self) -> None:
        self.record = self.client.store.get(self.record.manifest_digest)

    def __repr__(self) -> str:
        return f"<Image: '{', '.join(self.tags) or self.short_id}'>"


class ImageCollection:
    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, name: str) -> Image:
        return Image(self.client, self.client.store.get(name))

    def list(self, name: str | None = None, all: bool = False) -> builtins.list[Image]:
        images = [Image(self.client, r) for r in self.client.store.images()]
        if name is None:
            return images
        ref = parse(name, default_tag=False)
        return [
            img
            for img in images
            if any(
                parse(t).name == ref.name and (ref.tag is None or parse(t).tag == ref.tag)
                for t in img.record.tags
            )
        ]

    def _copy_all(
        self,
        images: builtins.list[SourceImage],
        dest: ImageDestination,
        names: builtins.list[Reference] | None = None,
        progress: Progress | None = None,
        before_commit: Callable[[str], None] | None = None,
    ) -> builtins.list[str]:
        from pyrun.transports.copy import copy_image

        digests = []
        try:
            for img in images:
                digests.append(copy_image(img, dest, names, progress))
            if before_commit is not None:
                before_commit(digests[0])
            dest.commit()
        except BaseException:
            dest.abort()
            raise
        return digests

    def _from_source(
        self,
        source: ImageSource,
        ref: str | None,
        names: builtins.list[Reference] | None,
        progress: Progress | None,
    ) -> builtins.list[Image]:
        from pyrun.transports.local import StoreDestination

        try:
            images = source.images(ref)
        finally:
            source.close()
        digests = self._copy_all(images, StoreDestination(self.client.store), names, progress)
        return [self.get(d) for d in digests]

    def load(
        self,
        path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        platform: str | None = None,
    ) -> builtins.list[Image]:
        """`docker load`: a docker-archive or OCI archive tar, every image in it, with its tags."""
        from pyrun.transports.layout import open_archive

        plat = oci.parse_platform(platform) if platform else None
        return self._from_source(open_archive(Path(path), plat), None, None, progress)

    def import_image(
        self,
        path: str | os.PathLike[str],
        repository: str | None = None,
        *,
        changes: builtins.list[str] | None = None,
        message: str = "",
        platform: str | None = None,
        progress: Progress | None = None,
    ) -> Image:
        """`docker import`: a rootfs tar (plain, gzip or zstd) becomes a one-layer image."""
        from pyrun.transports.rootfs import RootfsSource

        names = [parse(repository)] if repository else []
        plat = oci.parse_platform(platform) if platform else None
        src = RootfsSource(Path(path), changes=changes, message=message, platform=plat, names=names)
        return self._from_source(src, None, names, progress)[0]

    def save(
        self,
        names: builtins.list[str],
        path: str | os.PathLike[str],
        *,
        format: str = "docker-archive",
    ) -> None:
        """`docker save`: the images, with the tags they were named by, into one tar (atomic).
        An image pulled with its index (`--all-platforms`) goes into an OCI archive whole; a
        docker-archive holds this host's image."""
        from pyrun.transports.copy import copy_image
        from pyrun.transports.layout import docker_archive_destination, oci_archive_destination
        from pyrun.transports.local import StoreSource

        if format not in ("docker-archive", "oci-archive", "oci"):
            raise InvalidReference(f"unknown save format {format!r}: use docker-archive or oci")
        src = StoreSource(self.client.store)
        todo: builtins.list[SourceImage | tuple[bytes, str, builtins.list[SourceImage]]] = []
        named: builtins.list[builtins.list[Reference]] = []
        for name in names:
            (img,) = src.images(name)
            with contextlib.suppress(InvalidReference):
                ref = parse(name)
                rec_tags = [str(n) for n in img.names]
                img.names = [ref] if str(ref) in rec_tags else img.names
            index = src.index(name) if format != "docker-archive" else None
            todo.append(index if index is not None else img)
            named.append(img.names)
        dest = (
            docker_archive_destination(Path(path))
            if format == "docker-archive"
            else oci_archive_destination(Path(path))
        )
        try:
            for item, item_names in zip(todo, named, strict=True):
                if isinstance(item, tuple):  # an index: its images by digest, then itself
                    dest.in_index = True
                    for child in item[2]:
                        copy_image(child, dest, [])
                    dest.in_index = False
                    dest.put_manifest(item[0], item[1], item_names)
                else:
                    copy_image(item, dest)
            dest.commit()
        except BaseException:
            dest.abort()
            raise

    def copy(
        self,
        source: str,
        destination: str,
        *,
        platform: str | None = None,
        progress: Progress | None = None,
        all: bool = False,
        referrers: bool = False,
    ) -> str:
        """`skopeo copy` between any two transports (see pyrun.transports). Returns the digest.

        A multi-platform image (an index) goes whole to a registry or an OCI layout unless
        `platform` picks one image; with `all` it goes whole anywhere that can hold it (the
        local store too) and a destination that cannot (a docker-archive) is an error.
        `referrers`: the artifacts that refer to the image (signatures, SBOMs) go along."""
        from pyrun.transports.names import open_destination, open_source

        if all and platform:
            raise InvalidReference(
                "--all (--all-platforms) copies every platform: it cannot go with --platform"
            )
        plat = oci.parse_platform(platform) if platform else None
        src, ref = open_source(source, self.client.store, plat)
        try:  # open until the copy is done: a registry source streams its layers meanwhile
            # The source's blobs are known to be in its repository (mounts, same registry).
            record = getattr(src, "record_origins", None)
            if (
                plat is None
                and hasattr(src, "index")
                and (all or destination.startswith(("docker://", "oci:")))
            ):
                index = src.index(ref)
                if index is not None:  # a multi-platform image, copied whole
                    if record is not None:
                        record(self.client.store.ensure().root)
                    dest, names = open_destination(destination, self.client.store)
                    self._note_repo_digest(src, dest)
                    children = [oci.sha256_bytes(c.manifest) for c in index[2] if c.manifest]
                    extra = self._referrers_copier(src, dest, children, progress, referrers)
                    return self._copy_index(index, dest, names, progress, destination, extra)
            images = src.images(ref)
            if len(images) != 1:
                raise ImageNotFound(f"{source}: holds {len(images)} images; name one")
            dest, names = open_destination(destination, self.client.store)
            self._note_repo_digest(src, dest)
            if hasattr(dest, "origins_root"):  # a registry: mounts from repos known to hold blobs
                dest.origins_root = self.client.store.root
            if record is not None:
                record(self.client.store.root)
            extra = self._referrers_copier(src, dest, [], progress, referrers)
            return self._copy_all(images, dest, names, progress, extra)[0]
        finally:
            src.close()

    @staticmethod
    def _note_repo_digest(src: ImageSource, dest: ImageDestination) -> None:
        """A pull: the store keeps NAME@DIGEST as the registry named the image (for an
        index, the index's digest: Docker's RepoDigests and `Digest:` line)."""
        resolved = getattr(src, "resolved", None)
        if resolved and hasattr(dest, "repo_digest"):
            dest.repo_digest = f"{src.ref.name}@{resolved}"  # type: ignore[attr-defined]

    def _copy_index(
        self,
        index: tuple[bytes, str, builtins.list[SourceImage]],
        dest: ImageDestination,
        names: builtins.list[Reference] | None,
        progress: Progress | None,
        destination: str = "",
        before_commit: Callable[[str], None] | None = None,
    ) -> str:
        """Every image of an index (by digest), then the index itself under the names."""
        from pyrun.transports.copy import copy_image

        data, media_type, children = index
        if not getattr(dest, "takes_index", False):
            dest.abort()
            kind = destination.split(":", 1)[0] if ":" in destination else "this destination"
            raise InvalidReference(
                f"{kind} holds one image per name, not a multi-platform image (an index of "
                f"{len(children)}): pick one with --platform, or copy to oci: or oci-archive:"
            )
        if hasattr(dest, "origins_root"):
            dest.origins_root = self.client.store.root
        try:
            dest.in_index = True  # type: ignore[attr-defined]
            note = getattr(dest, "index_child", None)
            for child in children:  # by digest only
                if note is not None and child.manifest is not None:
                    note(child.manifest, data)
                copy_image(child, dest, [], progress)
            dest.in_index = False  # type: ignore[attr-defined]
            digest = dest.put_manifest(data, media_type, names or [])
            if before_commit is not None:
                before_commit(digest)
            dest.commit()
        except BaseException:
            dest.abort()
            raise
        return digest

    def _referrers_copier(
        self,
        src: ImageSource,
        dest: ImageDestination,
        also: builtins.list[str],
        progress: Progress | None,
        wanted: bool,
    ) -> Callable[[str], None] | None:
        """With `wanted`: what copies, before the destination commits, every artifact that
        refers to the copied manifest (and to `also`, an index's images), and the artifacts
        that refer to those, by digest."""
        if not wanted:
            return None
        listing = getattr(src, "referrers", None)
        if listing is None or not getattr(dest, "keeps_referrers", False):
            where = "source" if listing is None else "destination"
            raise InvalidReference(
                f"--referrers: this {where} does not keep referrers (use docker:// or oci:)"
            )

        def copy_them(digest: str) -> None:
            from pyrun.transports.copy import copy_image

            todo = [digest, *also]
            seen = set(todo)
            while todo:
                subject = todo.pop(0)
                for art in listing(subject):
                    assert art.manifest is not None
                    adigest = oci.sha256_bytes(art.manifest)
                    if adigest in seen:
                        continue
                    seen.add(adigest)
                    dest.in_index = True  # type: ignore[attr-defined]
                    try:
                        copy_image(art, dest, [], progress)
                    finally:
                        dest.in_index = False  # type: ignore[attr-defined]
                    dest.add_referrer(art.manifest, art.media_type)  # type: ignore[attr-defined]
                    if progress:
                        progress(f"{adigest[7:19]}: referrer of {subject[7:19]} copied")
                    todo.append(adigest)

        return copy_them

    def build(
        self,
        path: str | os.PathLike[str] | None = None,
        tag: str | builtins.list[str] | None = None,
        *,
        dockerfile: str | None = None,
        fileobj: Any = None,
        buildargs: dict[str, str] | None = None,
        target: str | None = None,
        nocache: bool = False,
        pull: bool = False,
        platform: str | None = None,
        labels: dict[str, str] | None = None,
        secrets: dict[str, bytes | str] | None = None,
    ) -> tuple[Image, builtins.list[dict[str, str]]]:
        """docker-py's images.build: (the image, the build's log as [{"stream": line}]).
        `fileobj` is a Dockerfile (file object or text) used instead of the context's;
        `secrets` maps ids to values for RUN --mount=type=secret. Raises
        pyrun.build.builder.BuildError (with `.tail`, a failing RUN's last lines)."""
        import io
        import tempfile

        from pyrun.build.builder import Builder

        tags = [tag] if isinstance(tag, str) else list(tag or [])
        out = io.StringIO()
        text = None
        if fileobj is not None:
            raw = fileobj if isinstance(fileobj, str | bytes) else fileobj.read()
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
        with contextlib.ExitStack() as stack:
            if path is None:
                if text is None:
                    raise TypeError("build() needs a path or a fileobj")
                path = stack.enter_context(tempfile.TemporaryDirectory())
            ctx = Path(path)
            builder = Builder(
                self.client.store,
                ctx,
                (ctx / dockerfile)
                if dockerfile and not os.path.isabs(dockerfile)
                else (Path(dockerfile) if dockerfile else None),
                dockerfile_text=text,
                tags=[parse(t) for t in tags],
                build_args=buildargs,
                target=target,
                no_cache=nocache,
                pull=lambda ref: self.pull(ref),
                always_pull=pull,
                platform=platform,
                labels=labels,
                secrets={
                    k: v.encode() if isinstance(v, str) else v for k, v in (secrets or {}).items()
                },
                out=out,
                progress="quiet",
            )
            digest = builder.build()
        logs = [{"stream": line + "\n"} for line in builder.progress.lines]
        return self.get(digest), logs

    def pull(
        self,
        repository: str,
        tag: str | None = None,
        *,
        platform: str | None = None,
        progress: Progress | None = None,
        all_platforms: bool = False,
    ) -> Image:
        """`docker pull`: copy from the registry into the store (a copy like any other: layers
        already in the store are neither fetched nor unpacked again). `all_platforms` keeps a
        multi-platform image whole (every platform's blobs; this host's image unpacked)."""
        from pyrun.transports.local import image_for

        ref = parse(f"{repository}:{tag}" if tag else repository)
        if ref.tag is None and ref.digest is None:
            ref = ref._replace(tag="latest")
        # By digest alone: unnamed in the store, found by NAME@DIGEST (Docker's RepoDigests).
        digest = self.copy(f"docker://{ref}", str(ref) if ref.tag else "pyrun:",
                           platform=platform, progress=progress, all=all_platforms)  # fmt: skip
        return self.get(image_for(self.client.store, digest))

    def push(
        self, repository: str, tag: str | None = None, *, progress: Progress | None = None
    ) -> str:
        """`docker push`: the local image REPOSITORY[:TAG] to the registry its name points at;
        returns the manifest digest."""
        ref = parse(f"{repository}:{tag}" if tag else repository)
        if ref.tag is None and ref.digest is None:
            ref = ref._replace(tag="latest")
        rec = self.client.store.get(str(ref))  # ImageNotFound before any network traffic
        digest = self.copy(str(ref), f"docker://{ref}", progress=progress)
        with self.client.store.update_refs() as refs:  # Docker's RepoDigests gains the push
            entry = refs["images"].get(rec.manifest_digest)
            if entry is not None:
                old = [d for d in entry.get("repoDigests", []) if d.split("@")[0] != ref.name]
                entry["repoDigests"] = sorted([*old, f"{ref.name}@{digest}"])
        return digest

    def list_tags(self, repository: str) -> builtins.list[str]:
        """The tags of REGISTRY/REPOSITORY in its registry, sorted (`skopeo list-tags`)."""
        from pyrun.registry.client import Registry

        ref = parse(repository)
        reg = Registry(ref.domain)
        try:
            return reg.tags(ref.path, page_size=1000)
        finally:
            reg.close()

    def referrers(
        self, reference: str, artifact_type: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Descriptors of the artifacts (signatures, SBOMs) whose subject is the manifest
        REGISTRY/REPOSITORY:TAG (or @DIGEST) names in its registry: the OCI 1.1 referrers
        API, or its fallback tag `sha256-<hex>` where the registry lacks it."""
        from pyrun.registry.client import Registry

        ref = parse(reference)
        reg = Registry(ref.domain)
        try:
            digest = reg.manifest_digest(ref.path, ref.digest or ref.tag or "latest")
            return reg.referrers(ref.path, digest, artifact_type)
        finally:
            reg.close()

    def delete_remote(self, reference: str) -> str:
        """Delete REGISTRY/REPOSITORY:TAG (or @DIGEST) from its registry (`skopeo delete`): the
        manifest goes, with every tag that points at it. Returns the manifest digest."""
        from pyrun.registry.client import Registry

        ref = parse(reference)
        reg = Registry(ref.domain)
        try:
            return reg.delete_manifest(ref.path, ref.digest or ref.tag or "latest")
        finally:
            reg.close()

    def remove(self, image: str, force: bool = False) -> builtins.list[dict[str, str]]:
        return [{k: v} for k, v in self.client.store.remove(image, force=force)]

    def prune(self, all: bool = False) -> dict[str, Any]:
        res = self.client.store.prune_images(all_unused=all)
        return {
            "ImagesDeleted": [{"Deleted": d} for d in res.images_removed],
            "SpaceReclaimed": res.bytes_freed,
        }


class ContainerError(APIError):
    """A container run by `containers.run` exited non-zero (docker-py's ContainerError)."""

    def __init__(
        self, container: Container, exit_status: int, command: list[str], stderr: bytes
    ) -> None:
        self.container = container
        self.exit_status = exit_status
        self.stderr = stderr
        text = stderr.decode(errors="replace").strip().splitlines()
        super().__init__(
            f"command {command!r} in image {container.record.get('image_name')} returned "
            f"non-zero exit status {exit_status}" + (f": {text[-1]}" if text else "")
        )


_ALIASES = {
    "environment": "env",
    "working_dir": "workdir",
    "network_mode": "network",
    "mem_limit": "memory",
    "memswap_limit": "memory_swap",
    "restart_policy": "restart",
    "publish_all_ports": "publish_all",
    "dns_opt": "dns_option",
}


def _docker_py_ports(ports: dict[Any, Any]) -> list[str]:
    """docker-py's ports={'80/tcp': 8080 | None | ('127.0.0.1', 8080) | [8080, 8081]}."""
    out = []
    for key, value in ports.items():
        port, _, proto = str(key).partition("/")
        suffix = f"/{proto}" if proto else ""
        for v in value if isinstance(value, list) else [value]:
            if v is None:
                out.append(f"{port}{suffix}")
            elif isinstance(v, tuple):
                ip, *rest = v
                out.append(f"{ip}:{rest[0] if rest else ''}:{port}{suffix}")
            else:
                out.append(f"{v}:{port}{suffix}")
    return out


def run_fields(options: dict[str, Any]) -> dict[str, Any]:
    """docker-py's spelling of run options as RunOptions fields."""
    fields = {_ALIASES.get(k, k): v for k, v in options.items()}
    if isinstance(fields.get("env"), dict):
        fields["env"] = [f"{k}={v}" for k, v in fields["env"].items()]
    if isinstance(fields.get("volumes"), dict):  # docker-py: {host: {"bind": dst, "mode": m}}
        fields["volumes"] = [
            f"{src}:{v['bind']}:{v.get('mode', 'rw')}" for src, v in fields["volumes"].items()
        ]
    if isinstance(fields.get("tmpfs"), dict):  # docker-py: {dst: "size=1m"}
        fields["tmpfs"] = [f"{k}:{v}" if v else k for k, v in fields["tmpfs"].items()]
    if isinstance(fields.get("labels"), dict):
        fields["labels"] = [f"{k}={v}" for k, v in fields["labels"].items()]
    restart = fields.get("restart")
    if isinstance(restart, dict):  # docker-py: {"Name": "on-failure", "MaximumRetryCount": 3}
        name = restart.get("Name") or "no"
        count = restart.get("MaximumRetryCount") or 0
        fields["restart"] = f"{name}:{count}" if name == "on-failure" and count else name
    if "network" in options and "network_mode" in options:
        raise InvalidReference("network and network_mode are mutually exclusive")
    if isinstance(fields.get("ports"), dict):
        fields["publish"] = _docker_py_ports(fields.pop("ports"))
    if isinstance(fields.get("extra_hosts"), dict):
        fields["extra_hosts"] = [f"{k}:{v}" for k, v in fields["extra_hosts"].items()]
    if isinstance(fields.get("entrypoint"), str):
        import shlex

        fields["entrypoint"] = shlex.split(fields["entrypoint"])
    return fields


def _capture_file(what: str) -> Any:
    """A file a foreground run's output goes to, read back when it exits: a memfd (no inode
    on the store's or /tmp's disk for each run), else an unnamed temporary file."""
    try:
        fd = os.memfd_create(f"pyrun-{what}", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile

        return tempfile.TemporaryFile()
    return open(fd, "w+b")


# Whether wait_removals is registered with atexit: a replayed --rm container's directory is
# deleted by a Rust thread (no GIL, no start handshake), which the interpreter waits for.
_removals_waited: builtins.list[bool] = []


# Run templates of foreground API runs (ContainerCollection._template_key), by store root and
# call: every Client of the process shares them; the oldest go beyond _TEMPLATES_KEPT.
_TEMPLATES: dict[tuple[str, str], bytes] = {}
_TEMPLATES_KEPT = 64


class ContainerCollection:
    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, ref: str) -> Container:
        from pyrun.runtime.containers import get_container

        return get_container(self.client.store, ref)

    def list(self, all: bool = False) -> builtins.list[Container]:
        from pyrun.runtime.containers import ACTIVE, list_containers

        found = list_containers(self.client.store)
        return found if all else [c for c in found if c.status in ACTIVE]

    def create(
        self,
        image: str,
        command: str | builtins.list[str] | None = None,
        *,
        name: str | None = None,
        auto_remove: bool = False,
        **options: Any,
    ) -> Container:
        """A container that is not started yet (`container.start()` starts it detached)."""
        import shlex

        if isinstance(command, str):
            command = shlex.split(command)
        return self._create(
            image, command or [], name=name, remove=auto_remove, fields=run_fields(options)
        )

    def run(
        self,
        image: str,
        command: str | builtins.list[str] | None = None,
        *,
        remove: bool = False,
        auto_remove: bool = False,
        detach: bool = False,
        name: str | None = None,
        stdout: bool = True,
        stderr: bool = False,
        **options: Any,
    ) -> Any:
        """docker-py's `containers.run`. In the foreground it returns the output (stdout, and
        stderr with stderr=True); a non-zero exit raises ContainerError. With detach=True it
        returns the Container, running under its monitor. `options` are RunOptions fields
        (docker-py's environment=, working_dir=, mem_limit=, restart_policy= too)."""
        import shlex

        from pyrun.runtime import containers as rt

        fields = run_fields(options)
        if isinstance(command, str):
            command = shlex.split(command)
        if detach:
            c = self._create(
                image, command or [], name=name, remove=remove or auto_remove, fields=fields
            )
            try:
                rt.start_detached(c)
            except PyrunError:
                if remove or auto_remove:
                    with contextlib.suppress(PyrunError, OSError):
                        c.remove(force=True)
                raise
            return c
        remove = remove or auto_remove
        key = self._template_key(image, command or [], remove, name, fields)
        with _capture_file("stdout") as out, _capture_file("stderr") as err:
            stdio = (out.fileno(), err.fileno())
            replayed = self._replay(key, stdio) if key is not None else None
            if replayed is not None:
                c, status = replayed
            else:
                c, status = self._run(
                    image,
                    command or [],
                    remove=remove,
                    name=name,
                    stdio=stdio,
                    fields=fields,
                    template=self._sink(key, image, command or [], fields),
                )
            out.seek(0)
            err.seek(0)
            out_b, err_b = out.read(), err.read()
        if status != 0:
            raise ContainerError(c, status, command or [], err_b)
        return (out_b if stdout else b"") + (err_b if stderr else b"")

    # A foreground run that a run template can express (runtime/template.py) is kept as one, in
    # memory: the same call again replays it in Rust (_core.replay_run: records, mount, run,
    # removal) while what it read is unchanged, which spares the Python side of a run.
    def _template_key(
        self,
        image: str,
        command: builtins.list[str],
        remove: bool,
        name: str | None,
        fields: dict[str, Any],
    ) -> str | None:
        from pyrun.runtime import template

        env = fields.get("env") or []
        if name is not None or not all("=" in e for e in env):
            return None  # a name to check; a variable taken from this process's environment
        expressible = template.expressible_options(
            restart=fields.get("restart"),
            interactive=bool(fields.get("interactive")),
            tty=bool(fields.get("tty")),
            volumes=[*(fields.get("volumes") or []), *(fields.get("mounts") or [])],
            publish=bool(fields.get("publish") or fields.get("publish_all")),
            network=fields.get("network", "bridge"),
            extra_hosts=list(fields.get("extra_hosts") or []),
            security_opt=list(fields.get("security_opt") or []),
        )
        if not expressible:
            return None
        try:
            return json.dumps([image, command, remove, fields], sort_keys=True)
        except (TypeError, ValueError):
            return None

    def _sink(
        self, key: str | None, image: str, command: builtins.list[str], fields: dict[str, Any]
    ) -> Sink | None:
        if key is None:
            return None
        from pyrun.runtime.template import Sink

        def keep(recipe: dict[str, Any]) -> None:
            _TEMPLATES[str(self.client.store.root), key] = json.dumps(recipe).encode()
            while len(_TEMPLATES) > _TEMPLATES_KEPT:
                del _TEMPLATES[next(iter(_TEMPLATES))]

        return Sink([image, *command, key], keep)

    def _replay(self, key: str, stdio: tuple[int, int]) -> tuple[Container, int] | None:
        from pyrun import _core
        from pyrun.runtime.containers import ContainerStartError

        where = (str(self.client.store.root), key)
        text = _TEMPLATES.get(where)
        if text is None:
            return None
        if not _removals_waited:
            import atexit

            atexit.register(_core.wait_removals)
            _removals_waited.append(True)
        try:
            out = _core.replay_run(str(self.client.store.root), text, stdio=stdio)
        except _core.StartError as e:
            message, code = e.args
            raise ContainerStartError(str(message), int(code)) from None
        if out is None:  # something it read changed: Python decides again
            _TEMPLATES.pop(where, None)
            return None
        record, status = out
        data = json.loads(record)
        from pyrun.runtime.containers import Container as Record

        c = Record(self.client.store, str(data["id"]))
        c._record = data
        return c, status

    def _create(
        self,
        image: str,
        command: builtins.list[str],
        *,
        remove: bool,
        name: str | None,
        fields: dict[str, Any],
        pull: str = "missing",
    ) -> Container:
        from pyrun.runtime import containers as rt
        from pyrun.runtime.spec import RunOptions, validate

        try:
            opts = RunOptions(command=list(command), **fields)
        except TypeError as e:
            raise InvalidReference(f"unknown run option: {e}") from None
        validate(opts)  # bad flags fail before any container record exists
        record = self._image_for_run(image, pull)
        return rt.create(
            self.client.store, record, opts, name=name, auto_remove=remove, image_name=image
        )

    def _image_for_run(self, image: str, pull: str) -> ImageRecord:
        """Docker's --pull: missing (pull when not in the store), always, never."""
        if pull not in ("missing", "always", "never"):
            raise InvalidReference(
                f'invalid pull option {pull!r}: must be "missing", "always" or "never"'
            )
        if pull == "always":
            self.client.images.pull(image)
            return self.client.store.get(image)
        try:
            return self.client.store.get(image)
        except ImageNotFound:
            if pull == "never":
                raise
        try:
            self.client.images.pull(image)
        except PyrunError as e:
            # One line: not here, and why it could not be fetched either.
            raise ImageNotFound(
                f"No such image: {parse(image).familiar()} (not in the store; pull failed: {e})"
            ) from None
        return self.client.store.get(image)

    def _run(
        self,
        image: str,
        command: builtins.list[str],
        *,
        remove: bool,
        name: str | None,
        stdio: tuple[int, int] | None,
        fields: dict[str, Any],
        interactive: bool = False,
        pull: str = "missing",
        template: Sink | None = None,
    ) -> tuple[Container, int]:
        """A foreground run in this process (the CLI's `run` without -d); `template`: where
        the run's template goes (runtime/template.py)."""
        from pyrun.runtime import containers as rt
        from pyrun.runtime.spec import RunOptions

        c = self._create(image, command, remove=remove, name=name, fields=fields, pull=pull)
        opts = RunOptions(**c.options)
        assert c.image is not None
        return c, rt.run_foreground(
            self.client.store,
            c.image,
            c,
            opts,
            stdio=stdio,
            interactive=interactive,
            template=template,
        )

    def prune(self) -> dict[str, Any]:
        from pyrun.runtime.containers import ACTIVE

        deleted = []
        for c in self.list(all=True):
            if c.status not in ACTIVE:
                c.remove()
                deleted.append(c.id)
        return {"ContainersDeleted": deleted}


class NetworkCollection:
    """docker-py's client.networks: bridge networks of the store."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _nets(self) -> Networks:
        from pyrun.network import Networks

        return Networks(self.client.store)

    def create(
        self,
        name: str,
        driver: str | None = None,
        *,
        ipam: dict[str, Any] | None = None,
        internal: bool = False,
        labels: dict[str, str] | None = None,
        subnet: str | None = None,
        gateway: str | None = None,
        **unsupported: Any,
    ) -> NetworkModel:
        """`ipam` as docker-py sends it ({"Config": [{"Subnet": ..., "Gateway": ...}]}) or
        `subnet=`/`gateway=` directly."""
        if unsupported:
            raise APIError(f"unsupported network option(s): {', '.join(sorted(unsupported))}")
        for pool in (ipam or {}).get("Config") or (ipam or {}).get("pool_configs") or []:
            subnet = pool.get("Subnet") or pool.get("subnet") or subnet
            gateway = pool.get("Gateway") or pool.get("gateway") or gateway
        n = self._nets().create(
            name,
            subnet=subnet,
            gateway=gateway,
            internal=internal,
            labels=labels,
            driver=driver or "bridge",
        )
        return NetworkModel(self.client, n.id)

    def get(self, ref: str) -> NetworkModel:
        return NetworkModel(self.client, self._nets().get(ref).id)

    def list(
        self, names: builtins.list[str] | None = None, ids: builtins.list[str] | None = None
    ) -> builtins.list[NetworkModel]:
        out = []
        for n in self._nets().list():
            if names is not None and n.name not in names:
                continue
            if ids is not None and not any(n.id.startswith(i) for i in ids):
                continue
            out.append(NetworkModel(self.client, n.id))
        return out

    def prune(self) -> dict[str, Any]:
        return {"NetworksDeleted": self._nets().prune()}


class NetworkModel:
    """docker-py's Network: attrs, name, id, containers, connect, disconnect, remove."""

    def __init__(self, client: Client, nid: str) -> None:
        self.client = client
        self.id = nid

    def _net(self) -> Network:
        from pyrun.network import Networks

        return Networks(self.client.store).get(self.id)

    @property
    def attrs(self) -> dict[str, Any]:
        return self._net().attrs()

    @property
    def name(self) -> str:
        return self._net().name

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def containers(self) -> builtins.list[Container]:
        return [self.client.containers.get(cid) for cid in self.attrs["Containers"]]

    def reload(self) -> None:
        self._net()

    def connect(
        self,
        container: Container | str,
        aliases: builtins.list[str] | None = None,
        ipv4_address: str | None = None,
    ) -> None:
        from pyrun.network.attach import connect

        c = self.client.containers.get(container) if isinstance(container, str) else container
        c.reload()
        connect(self.client.store, c, self.id, aliases=aliases, ip=ipv4_address)

    def disconnect(self, container: Container | str, force: bool = False) -> None:
        from pyrun.network.attach import disconnect

        c = self.client.containers.get(container) if isinstance(container, str) else container
        c.reload()
        disconnect(self.client.store, c, self.id)

    def remove(self) -> None:
        self._net()
        from pyrun.network import Networks

        Networks(self.client.store).remove(self.id)

    def __repr__(self) -> str:
        return f"<Network: {self.short_id}>"


class SystemAPI:
    def __init__(self, client: Client) -> None:
        self.client = client

    def check(self) -> list[str]:
        return self.client.store.check()

    def prune(self, all: bool = False) -> dict[str, Any]:
        """Stopped containers, then unused images and content (Docker's `system prune`)."""
        containers = self.client.containers.prune()
        networks: builtins.list[str] = []
        if (self.client.store.root / "networks").is_dir():
            from pyrun.network import Networks, purge_orphans

            networks = Networks(self.client.store).prune()  # releases crash leftovers first
            purge_orphans()  # and what deleted stores left in the kernel
        cache = 0
        if (self.client.store.root / "build-cache").is_dir():
            from pyrun.build.builder import prune_cache

            # The records no tagged image is made of (-a: all, with the cache mounts), before
            # the image prune whose collection then frees the layers only they held.
            cache = prune_cache(self.client.store, all_entries=all)
        return {
            **containers,
            "NetworksDeleted": networks,
            "BuildCacheDeleted": cache,
            **self.client.images.prune(all=all),
        }

    def df(self) -> dict[str, Any]:
        """Disk use in docker-py's shape: `Images`, `Containers`, `Volumes`, `BuildCache` (a
        list each) and `LayersSize`. An image's `Size` counts its blobs and unpacked layers,
        `SharedSize` the unpacked layers other images share too; `Containers` and a volume's
        `UsageData.RefCount` count the containers using it."""
        from pyrun.runtime.containers import list_containers
        from pyrun.store.fsutil import tree_size
        from pyrun.volumes import Volumes

        store = self.client.store
        usage = store.disk_usage()
        layer_size: dict[str, int] = {}

        def layer(d: str) -> int:
            if d not in layer_size:
                layer_size[d] = tree_size(store.layer_path(d))
            return layer_size[d]

        found = list_containers(store)
        users: dict[str, int] = {}
        for c in found:
            image = str(c.record.get("image"))
            users[image] = users.get(image, 0) + 1
        images = store.images()
        layer_refs: dict[str, int] = {}
        for img in images:
            for d in set(img.diff_ids):
                layer_refs[d] = layer_refs.get(d, 0) + 1
        out_images = []
        for img in images:
            blobs = sum(int(x.get("size", 0)) for x in img.manifest.get("layers", []))
            blobs += int(img.manifest.get("config", {}).get("size", 0))
            unpacked = sum(layer(d) for d in set(img.diff_ids))
            shared = sum(layer(d) for d in set(img.diff_ids) if layer_refs[d] > 1)
            out_images.append(
                {
                    "Id": img.id,
                    "RepoTags": img.tags,
                    "Size": blobs + unpacked,
                    "SharedSize": shared,
                    "Containers": users.get(img.manifest_digest, 0),
                }
            )
        containers = [
            {
                "Id": c.id,
                "Names": [f"/{c.name}"],
                "State": c.status,
                "SizeRw": tree_size(c.dir / "upper"),
            }
            for c in found
        ]
        vols = Volumes(store)
        volumes = []
        for info in vols.list():
            size = tree_size(vols.data(info["Name"]))
            volumes.append(
                {**info, "UsageData": {"Size": size, "RefCount": len(vols.users(info["Name"]))}}
            )
        cache_dir = store.root / "build-cache"
        records_n = len(list(cache_dir.glob("*.json"))) if cache_dir.is_dir() else 0
        cache = [
            {"Type": "regular", "Count": records_n, "Size": tree_size(cache_dir), "InUse": False}
        ] if cache_dir.is_dir() else []  # fmt: skip
        return {
            "LayersSize": usage["layers"],
            "BlobsSize": usage["blobs"],
            "Images": out_images,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": cache,
        }


class Client:
    """Entry point of the Python API. `root` defaults to $PYRUN_ROOT or /var/lib/pyrun."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.store = Store(root)
        self.images = ImageCollection(self)
        self.containers = ContainerCollection(self)
        self.networks = NetworkCollection(self)
        self.system = SystemAPI(self)

    def close(self) -> None:
        pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def from_env() -> Client:
    return Client()
