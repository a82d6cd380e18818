"""OCI and Docker image media types, descriptors, platforms and ChainIDs."""

from __future__ import annotations

import json
import os
from typing import Any

from pyrun.errors import InvalidArchive

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_FOREIGN_LAYER,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

OCI_LAYER_BY_COMPRESSION = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


def sha256_bytes(data: bytes) -> str:
    import hashlib  # lazy: loading OpenSSL costs the CLI ~4 ms

    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_bytes(f"{out[-1]} {diff_id}".encode()))
    return out


def descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def image_manifest(config_bytes: bytes, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """An OCI image manifest for a config blob and layer descriptors."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, sha256_bytes(config_bytes), len(config_bytes)),
        "layers": layers,
    }


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArchive(f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidArchive(f"{what} is not a JSON object")
    return obj


def manifest_media_type(data: bytes, declared: str | None = None) -> str:
    """The media type of a manifest blob: its own `mediaType`, else the declared one, else by shape."""
    obj = load_json(data, "manifest")
    mt = obj.get("mediaType") or declared
    if mt:
        return str(mt)
    return OCI_INDEX if "manifests" in obj else OCI_MANIFEST


def host_platform() -> dict[str, str]:
    machine = os.uname().machine.lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "i386": "386",
        "i686": "386",
        "armv7l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(machine, machine)
    out = {"os": "linux", "architecture": arch}
    if arch == "arm":
        out["variant"] = "v7"
    return out


def parse_platform(text: str) -> dict[str, str]:
    """`os/arch[/variant]` as `--platform` takes it."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise InvalidArchive(f"invalid platform {text!r}: expected os/arch[/variant]")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def format_platform(p: dict[str, Any]) -> str:
    s = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return s + (f"/{p['variant']}" if p.get("variant") else "")


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386",
                 "i686": "386", "armhf": "arm", "armel": "arm"}  # fmt: skip


def normalize_platform(p: dict[str, Any]) -> tuple[str, str, str]:
    """(os, architecture, variant) as containerd compares them: aarch64 is arm64 (whose v8 is
    no variant), armhf is arm/v7, armel arm/v6, x86_64 amd64."""
    raw = str(p.get("architecture", "")).lower()
    arch = _ARCH_ALIASES.get(raw, raw)
    variant = str(p.get("variant") or "").lower()
    if raw == "armhf" and not variant:
        variant = "v7"
    elif raw == "armel" and not variant:
        variant = "v6"
    if arch == "arm64" and variant == "v8":
        variant = ""
    if arch == "arm" and not variant:
        variant = "v7"
    return str(p.get("os", "")).lower(), arch, variant


def _preferences(want: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The platforms `want` runs, best first (containerd's and moby's fallbacks)."""
    os_, arch, variant = normalize_platform(want)
    prefs = [(os_, arch, variant)]
    if arch == "arm" and variant.startswith("v") and variant[1:].isdigit():
        prefs += [(os_, "arm", f"v{n}") for n in range(int(variant[1:]) - 1, 4, -1)]
    elif arch == "arm64":
        prefs += [(os_, "arm", f"v{n}") for n in (8, 7, 6, 5)]
    elif arch == "amd64":
        prefs.append((os_, "386", ""))
    return prefs


def select_manifest(index: dict[str, Any], want: dict[str, str] | None) -> dict[str, Any]:
    """Pick the descriptor for `want` (default: this host) from an image index, with Docker's
    fallbacks (arm/v7 takes v6 and v5, arm64 takes arm, amd64 takes 386); when nothing fits,
    the error lists what the index has."""
    want = want or host_platform()
    entries = [
        m
        for m in index.get("manifests", [])
        if m.get("mediaType") in MANIFEST_TYPES + INDEX_TYPES or "platform" in m
    ]
    if not entries:
        raise InvalidArchive("image index lists no manifests")
    prefs = _preferences(want)
    best: tuple[int, dict[str, Any]] | None = None
    for m in entries:
        if "platform" not in m:
            continue
        key = normalize_platform(m["platform"])
        # A wanted platform without a variant takes any variant of that architecture.
        for rank, p in enumerate(prefs):
            same = key[:2] == p[:2] and (key[2] == p[2] or (rank == 0 and "variant" not in want))
            if same and (best is None or rank < best[0]):
                best = (rank, m)
                break
    if best is not None:
        return dict(best[1])
    if len(entries) == 1 and "platform" not in entries[0]:
        return dict(entries[0])
    available = ", ".join(format_platform(m.get("platform") or {}) for m in entries)
    raise InvalidArchive(
        f"no matching manifest for {format_platform(want)} in the manifest list entries "
        f"(available: {available})"
    )
