"""A plain rootfs tar (plain, gzip or zstd) as an image source: `pyrun import`. The layer's
digests are computed while it is copied; the config and manifest are built afterwards, with
`docker import`'s `--change` instructions applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyrun import oci
from pyrun.errors import InvalidArchive, PyrunError
from pyrun.reference import Reference
from pyrun.store import now_rfc3339
from pyrun.store.fsutil import canonical_json
from pyrun.transports.base import Blob, LayerResult, SourceImage, SourceLayer

CHANGE_INSTRUCTIONS = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
)


class InvalidChange(PyrunError):
    exit_code = 125


def _json_or_shell(args: str, shell_form: bool) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", args] if shell_form else [args]


def _kv_pairs(args: str, what: str) -> dict[str, str]:
    from pyrun.build.parser import key_values

    try:
        return key_values(args)
    except ValueError as e:
        raise InvalidChange(f"invalid {what} instruction {args!r}: {e}") from None


def apply_changes(config: dict[str, Any], changes: list[str]) -> None:
    """Apply Dockerfile instructions to an image config's `config` section, as `docker import
    --change` / `docker commit --change` do."""
    c = config.setdefault("config", {})
    for change in changes:
        instr, _, args = change.strip().partition(" ")
        instr = instr.upper()
        if instr not in CHANGE_INSTRUCTIONS:
            raise InvalidChange(
                f"invalid --change {change!r}: {instr or 'empty'} is not one of {', '.join(CHANGE_INSTRUCTIONS)}"
            )
        if not args.strip():
            raise InvalidChange(f"invalid --change {change!r}: {instr} needs an argument")
        if instr in ("CMD", "ENTRYPOINT"):
            c["Cmd" if instr == "CMD" else "Entrypoint"] = _json_or_shell(args, True)
        elif instr == "ENV":
            env = [e for e in c.get("Env", [])]
            for k, v in _kv_pairs(args, "ENV").items():
                env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
            c["Env"] = env
        elif instr == "LABEL":
            c.setdefault("Labels", {}).update(_kv_pairs(args, "LABEL"))
        elif instr == "EXPOSE":
            for port in args.split():
                p = port if "/" in port else f"{port}/tcp"
                num = p.split("/")[0]
                if not num.isdigit() or not 0 < int(num) < 65536:
                    raise InvalidChange(f"invalid --change {change!r}: bad port {port!r}")
                c.setdefault("ExposedPorts", {})[p] = {}
        elif instr == "VOLUME":
            for v in _json_or_shell(args, False) if args.strip().startswith("[") else args.split():
                c.setdefault("Volumes", {})[v] = {}
        elif instr == "USER":
            c["User"] = args.strip()
        elif instr == "WORKDIR":
            c["WorkingDir"] = args.strip()
        elif instr == "ONBUILD":
            c.setdefault("OnBuild", []).append(args.strip())


class RootfsSource:
    def __init__(
        self,
        path: Path,
        *,
        changes: list[str] | None = None,
        message: str = "",
        platform: dict[str, str] | None = None,
        names: list[Reference] | None = None,
    ) -> None:
        if not path.is_file():
            raise InvalidArchive(f"{path}: no such file")
        self.path = path
        self.changes = changes or []
        self.message = message
        self.platform = platform or oci.host_platform()
        self.names = names or []
        # Validate --change before any byte is copied.
        apply_changes({}, self.changes)

    def _finalize(self, results: list[LayerResult]) -> tuple[bytes, bytes]:
        (layer,) = results
        created = now_rfc3339()
        config: dict[str, Any] = {
            "created": created,
            "architecture": self.platform["architecture"],
            "os": self.platform["os"],
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [
                {
                    "created": created,
                    "created_by": f"pyrun import {self.path.name}",
                    **({"comment": self.message} if self.message else {}),
                }
            ],
        }
        if "variant" in self.platform:
            config["variant"] = self.platform["variant"]
        apply_changes(config, self.changes)
        config_bytes = canonical_json(config)
        manifest = oci.image_manifest(
            config_bytes, [oci.descriptor(layer.media_type, layer.digest, layer.size)]
        )
        return canonical_json(manifest), config_bytes

    def images(self, ref: str | None = None) -> list[SourceImage]:
        layer = SourceLayer(Blob(str(self.path)), None, None)
        return [SourceImage(None, oci.OCI_MANIFEST, None, [layer], self.names, self._finalize)]

    def close(self) -> None:
        pass
