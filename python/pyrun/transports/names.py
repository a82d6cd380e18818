"""Parse transport strings (`oci:DIR:TAG`, `docker-archive:FILE`, a bare reference, ...) into
sources and destinations."""

from __future__ import annotations

from pathlib import Path

from pyrun.errors import InvalidReference
from pyrun.reference import Reference, parse
from pyrun.store import Store
from pyrun.transports.base import ImageDestination, ImageSource
from pyrun.transports.layout import (
    docker_archive_destination,
    oci_archive_destination,
    oci_dir_destination,
    open_archive,
    open_layout_dir,
)
from pyrun.transports.local import StoreDestination, StoreSource
from pyrun.transports.rootfs import RootfsSource

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "rootfs", "pyrun", "docker")


def _split(spec: str) -> tuple[str, str]:
    if spec.startswith("docker://"):
        return "docker", spec[len("docker://") :]
    name, sep, rest = spec.partition(":")
    if sep and name in TRANSPORTS:
        return name, rest
    return "pyrun", spec


def _path_and_ref(rest: str) -> tuple[Path, str | None]:
    # skopeo's rule: the path ends at the first ':' and the rest names the image in it.
    path, sep, ref = rest.partition(":")
    return Path(path), (ref if sep else None)


def open_source(
    spec: str, store: Store, platform: dict[str, str] | None = None
) -> tuple[ImageSource, str | None]:
    kind, rest = _split(spec)
    if kind == "docker":
        from pyrun.transports.registry import RegistrySource

        return RegistrySource(parse(rest), platform), None
    if kind == "pyrun":
        return StoreSource(store), rest
    if not rest:
        raise InvalidReference(f"invalid transport {spec!r}: a path is required after '{kind}:'")
    if kind == "rootfs":
        return RootfsSource(Path(rest), platform=platform), None
    path, ref = _path_and_ref(rest)
    if kind == "oci":
        return open_layout_dir(path, platform), ref if ref is not None else ""
    return open_archive(path, platform), ref


def open_destination(spec: str, store: Store) -> tuple[ImageDestination, list[Reference] | None]:
    """A destination and the names to give the copied image (None: keep the source's names)."""
    kind, rest = _split(spec)
    if kind == "docker":
        from pyrun.transports.registry import RegistryDestination

        target = parse(rest)
        if target.digest is not None:
            raise InvalidReference(f"{spec}: push to a tag, not a digest")
        return RegistryDestination(target), [target]
    if kind == "pyrun":  # `pyrun:` alone: the image goes in unnamed (a pull by digest)
        return StoreDestination(store), [parse(rest)] if rest else []
    if kind == "rootfs":
        raise InvalidReference(
            "rootfs: is a source only (use `pyrun export` for a container's files)"
        )
    if not rest:
        raise InvalidReference(f"invalid transport {spec!r}: a path is required after '{kind}:'")
    path, ref = _path_and_ref(rest)
    if kind == "oci":
        return oci_dir_destination(path, ref), []
    if kind == "oci-archive":
        return oci_archive_destination(path, ref), []
    return docker_archive_destination(path), [parse(ref)] if ref else None
