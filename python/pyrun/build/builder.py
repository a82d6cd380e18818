"""`pyrun build`, first increment: a Dockerfile and a context directory become an image in the
store. Stages (`FROM image|scratch|stage AS name`, `--target`), ARG (global and per stage,
`--build-arg`), ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, SHELL, CMD, ENTRYPOINT,
RUN (a container through the pyrun runtime; its layer is the diff of its overlay upper dir,
written by the Rust layer engine) and COPY/ADD (from the context or `--from` a stage, with
`--chown uid:gid` and `--chmod`).

Cache: each step's key hashes the parent's key, the expanded instruction, the build args it
sees and, for COPY/ADD, the selected files' paths, modes and bytes (not mtimes). A hit reuses
the recorded state when its layers are still in the store; `--no-cache` skips lookups."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from pyrun import oci
from pyrun.build.parser import (
    DockerfileError,
    Instruction,
    expand,
    key_values,
    parse,
    split_words,
)
from pyrun.errors import PyrunError
from pyrun.reference import Reference
from pyrun.store import Store, now_rfc3339
from pyrun.store.fsutil import atomic_write_json, canonical_json, remove_tree

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BuildError(PyrunError):
    exit_code = 1


class Stage:
    def __init__(self, index: int, name: str | None, base: str, instructions: list[Instruction]):
        self.index = index
        self.name = name
        self.base = base
        self.instructions = instructions
        # The image being built: its config (the whole config blob) and layer descriptors.
        self.config: dict[str, Any] = {}
        self.layers: list[dict[str, Any]] = []
        self.key = ""
        self.args: dict[str, str] = {}
        self.shell = ["/bin/sh", "-c"]
        self.cmd_set = False  # a CMD ran in this stage (ENTRYPOINT then keeps it)


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


class Builder:
    def __init__(
        self,
        store: Store,
        context: Path,
        dockerfile: Path | None = None,
        *,
        tags: list[Reference] | None = None,
        build_args: dict[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        pull: Any = None,
        out: Any = None,
    ) -> None:
        self.store = store
        self.context = context.resolve()
        if not self.context.is_dir():
            raise BuildError(f"unable to prepare context: path {context} not found")
        self.dockerfile = dockerfile or self.context / "Dockerfile"
        self.tags = tags or []
        self.build_args = dict(build_args or {})
        self.target = target
        self.no_cache = no_cache
        self.pull = pull  # callable(ref) -> None, for a base image not in the store
        self.out = out or sys.stdout
        self.cache_dir = store.root / "build-cache"
        self.ignore = self._dockerignore()
        # SOURCE_DATE_EPOCH (build arg, else environment): every time in the image (history,
        # created, file mtimes in the layers it makes) is clamped to it: reproducible digests.
        sde = self.build_args.get("SOURCE_DATE_EPOCH", os.environ.get("SOURCE_DATE_EPOCH", ""))
        try:
            self.epoch: int | None = int(sde) if sde != "" else None
        except ValueError:
            raise BuildError(f"invalid SOURCE_DATE_EPOCH {sde!r}: seconds since 1970") from None

    # --- output ----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # --- parsing into stages ---------------------------------------------------------------
    def stages(self) -> tuple[dict[str, str], list[Stage]]:
        try:
            text = self.dockerfile.read_text()
        except OSError as e:
            raise BuildError(f"open {self.dockerfile}: {e.strerror}") from None
        insts = parse(text, str(self.dockerfile.name))
        global_args: dict[str, str] = {}
        stages: list[Stage] = []
        for inst in insts:
            if inst.cmd == "FROM":
                words = split_words(expand(inst.args, {**global_args}, f"{inst.line}: "))
                if len(words) == 3 and words[1].lower() == "as":
                    name: str | None = words[2].lower()
                elif len(words) == 1:
                    name = None
                else:
                    raise DockerfileError(
                        f"{self.dockerfile.name}:{inst.line}: FROM requires IMAGE [AS NAME]"
                    )
                stages.append(Stage(len(stages), name, words[0], []))
            elif not stages:
                if inst.cmd != "ARG":
                    raise DockerfileError(
                        f"{self.dockerfile.name}:{inst.line}: {inst.cmd} before the first FROM "
                        "(only ARG may come before it)"
                    )
                k, eq, v = inst.args.partition("=")
                global_args[k.strip()] = self.build_args.get(k.strip(), v if eq else "")
            else:
                stages[-1].instructions.append(inst)
        if not stages:
            raise DockerfileError(f"{self.dockerfile.name}: no FROM instruction")
        return global_args, stages

    # --- the build -------------------------------------------------------------------------
    def build(self) -> str:
        """Build the target stage; returns the image's manifest digest (tagged with tags)."""
        global_args, stages = self.stages()
        by_name = {s.name: s for s in stages if s.name}
        if self.target:
            target = by_name.get(self.target.lower())
            if target is None:
                raise BuildError(f"target stage {self.target!r} could not be found")
        else:
            target = stages[-1]
        built: dict[int, Stage] = {}

        def need(stage: Stage) -> None:
            if stage.index in built:
                return
            base = by_name.get(stage.base.lower())
            if base is not None and base.index < stage.index:
                need(base)
            for inst in stage.instructions:
                src = _flag(inst, "from")
                if inst.cmd in ("COPY", "ADD") and src is not None:
                    dep = by_name.get(src.lower()) or (
                        stages[int(src)] if src.isdigit() and int(src) < len(stages) else None
                    )
                    if dep is not None:
                        if dep.index >= stage.index:
                            raise BuildError(
                                f"{self.dockerfile.name}:{inst.line}: COPY --from={src}: "
                                "a stage can only copy from an earlier one"
                            )
                        need(dep)
            self.build_stage(stage, global_args, by_name, built)
            built[stage.index] = stage

        # A writer's lease for the whole build: garbage collection must not take the layers of
        # the steps, which no image refers to until the end.
        with self.store.writing():
            need(target)
            return self.finish(target)

    def _from(self, stage: Stage, global_args: dict[str, str], by_name: dict[str, Stage],
              built: dict[int, Stage]) -> None:  # fmt: skip
        base = stage.base
        parent = by_name.get(base.lower())
        if parent is not None and parent.index in built:
            stage.config = json.loads(json.dumps(parent.config))
            stage.layers = list(parent.layers)
            stage.key = _sha("stage", parent.key)
            stage.args = dict(parent.args)
            stage.shell = list(parent.shell)
            return
        if base == "scratch":
            plat = oci.host_platform()
            stage.config = {
                "architecture": plat["architecture"],
                "os": plat["os"],
                "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }
            stage.key = _sha("scratch")
            return
        from pyrun.errors import ImageNotFound

        try:
            rec = self.store.get(base)
        except ImageNotFound:
            if self.pull is None:
                raise
            self.pull(base)
            rec = self.store.get(base)
        stage.config = json.loads(json.dumps(rec.config))
        stage.layers = [dict(d) for d in rec.layers]
        stage.key = _sha("image", rec.manifest_digest)

    def build_stage(self, stage: Stage, global_args: dict[str, str],
                    by_name: dict[str, Stage], built: dict[int, Stage]) -> None:  # fmt: skip
        self._from(stage, global_args, by_name, built)
        label = f"stage {stage.name or stage.index}"
        n = len(stage.instructions) + 1
        self.say(f"#{stage.index} [{label} 1/{n}] FROM {stage.base}")
        for step, inst in enumerate(stage.instructions, 2):
            where = f"{self.dockerfile.name}:{inst.line}: "
            env = self._env(stage)
            text = inst.original
            extra = ""
            if inst.cmd in ("COPY", "ADD"):
                extra = self._sources_digest(stage, inst, env, where, by_name, built)
            # The build args a RUN sees go into its key; ENV is in the config already.
            key = _sha(stage.key, text, json.dumps(stage.args, sort_keys=True), extra,
                       str(self.epoch))  # fmt: skip
            prefix = f"#{stage.index} [{label} {step}/{n}] {text}"
            if not self.no_cache and self._load_cache(stage, key):
                self.say(f"{prefix}  (cached)")
                stage.key = key
                continue
            self.say(prefix)
            self.step(stage, inst, env, where, by_name, built)
            stage.key = key
            self._save_cache(stage, key)

    # --- instructions ----------------------------------------------------------------------
    def _env(self, stage: Stage) -> dict[str, str]:
        env = dict(stage.args)
        for item in stage.config.get("config", {}).get("Env") or []:
            k, _, v = item.partition("=")
            env[k] = v
        return env

    def now(self) -> str:
        if self.epoch is None:
            return now_rfc3339()
        import datetime as dt

        t = dt.datetime.fromtimestamp(self.epoch, dt.UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _history(self, stage: Stage, created_by: str, empty: bool) -> None:
        stage.config.setdefault("history", []).append(
            {"created": self.now(), "created_by": created_by, "comment": "pyrun build",
             **({"empty_layer": True} if empty else {})}
        )  # fmt: skip

    def step(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str,
             by_name: dict[str, Stage], built: dict[int, Stage]) -> None:  # fmt: skip
        cfg = stage.config.setdefault("config", {})
        cmd = inst.cmd
        if cmd == "RUN":
            self.run(stage, inst, env, where)
            return
        if cmd in ("COPY", "ADD"):
            self.copy(stage, inst, env, where, by_name, built)
            return
        args = (
            expand(inst.args, env, where)
            if cmd not in ("CMD", "ENTRYPOINT", "SHELL")
            else inst.args
        )
        if cmd == "ENV":
            pairs = _kv(args, where)
            current = [e for e in cfg.get("Env") or []]
            for k, v in pairs.items():
                current = [e for e in current if e.partition("=")[0] != k] + [f"{k}={v}"]
            cfg["Env"] = current
        elif cmd == "ARG":
            name, eq, default = args.partition("=")
            name = name.strip()
            stage.args[name] = self.build_args.get(name, default if eq else "")
            self._history(stage, f"ARG {args}", True)
            return
        elif cmd == "WORKDIR":
            base = cfg.get("WorkingDir") or "/"
            cfg["WorkingDir"] = os.path.normpath(os.path.join(base, args.strip()))
        elif cmd == "USER":
            cfg["User"] = args.strip()
        elif cmd == "LABEL":
            cfg.setdefault("Labels", {}).update(_kv(args, where))
        elif cmd == "EXPOSE":
            for port in args.split():
                p = port if "/" in port else f"{port}/tcp"
                cfg.setdefault("ExposedPorts", {})[p] = {}
        elif cmd == "VOLUME":
            vols = inst.json_args if inst.json_args is not None else args.split()
            for v in vols:
                cfg.setdefault("Volumes", {})[expand(v, env)] = {}
        elif cmd == "STOPSIGNAL":
            cfg["StopSignal"] = args.strip()
        elif cmd == "SHELL":
            if inst.json_args is None:
                raise DockerfileError(
                    f'{where}SHELL requires the JSON form: SHELL ["executable", ...]'
                )
            stage.shell = inst.json_args
        elif cmd in ("CMD", "ENTRYPOINT"):
            value = inst.json_args if inst.json_args is not None else [*stage.shell, inst.args]
            cfg["Cmd" if cmd == "CMD" else "Entrypoint"] = value
            if cmd == "CMD":
                stage.cmd_set = True
            elif not stage.cmd_set:
                cfg.pop("Cmd", None)  # Docker: ENTRYPOINT resets a CMD inherited from the base
        elif cmd == "MAINTAINER":
            stage.config["author"] = args.strip()
        elif cmd == "ONBUILD":
            cfg.setdefault("OnBuild", []).append(inst.args.strip())
        elif cmd == "HEALTHCHECK":
            raise DockerfileError(f"{where}HEALTHCHECK is not supported yet")
        self._history(stage, f"{cmd} {args}", True)

    def run(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str) -> None:
        from pyrun import _core
        from pyrun.runtime.spec import RunOptions, build_spec

        cfg = stage.config.get("config", {})
        argv = inst.json_args if inst.json_args is not None else [*stage.shell, inst.args]
        run_env = [f"{k}={v}" for k, v in stage.args.items() if k not in _env_names(cfg)]
        with self._mounted(stage) as (rootfs, upper):
            opts = RunOptions(command=list(argv), entrypoint=[], env=run_env, network="host")
            spec = build_spec(cfg, str(rootfs), opts, os.urandom(16).hex())
            spec["root"]["path"] = str(rootfs)
            spec["process"]["cwd"] = cfg.get("WorkingDir") or "/"
            bundle = rootfs.parent / "bundle"
            bundle.mkdir()
            atomic_write_json(bundle / "config.json", spec, durable=False, pretty=False)
            try:
                code = _core.run_container(str(bundle))
            except _core.StartError as e:
                raise BuildError(f"{where}RUN {inst.args}: {e.args[0]}") from None
            if code != 0:
                raise BuildError(
                    f"{where}RUN {inst.args!r} did not complete successfully: exit code {code}"
                )
            self._add_layer(stage, upper, overlay_upper=True)
        self._history(stage, f"RUN {' '.join(argv)}", False)

    @contextlib.contextmanager
    def _mounted(self, stage: Stage) -> Any:
        """The stage's current root as an overlay with a fresh upper dir: (root, upper)."""
        from pyrun import _core

        work = self.store.ensure().new_temp(".build")
        for d in ("rootfs", "upper", "work", "empty"):
            (work / d).mkdir(parents=True)
        diffs = stage.config.get("rootfs", {}).get("diff_ids", [])
        lowers = [str(self.store.layer_diff(d)) for d in reversed(diffs)] or [str(work / "empty")]
        links = self.store.root / "layers" / "l"
        links.mkdir(parents=True, exist_ok=True)
        _core.mount_overlay(lowers, str(work / "rootfs"), upper=str(work / "upper"),
                            work=str(work / "work"), links_dir=str(links))  # fmt: skip
        try:
            yield work / "rootfs", work / "upper"
        finally:
            with contextlib.suppress(OSError):
                _core.unmount(str(work / "rootfs"), detach=True)
            remove_tree(work)

    def _add_layer(self, stage: Stage, src: Path, *, overlay_upper: bool) -> None:
        from pyrun import _core

        tmp = self.store.new_temp(".layer.tar.gz")
        try:
            _core.create_layer(
                str(src), str(tmp), overlay_upper=overlay_upper, source_date_epoch=self.epoch
            )
            with self.store.writing():
                res = self.store.unpack_layer(str(tmp))
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        stage.layers.append(oci.descriptor(oci.OCI_LAYER_GZIP, res["digest"], res["size"]))
        stage.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(
            res["diff_id"]
        )

    # --- COPY / ADD ------------------------------------------------------------------------
    def _sources(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str,
                 by_name: dict[str, Stage], built: dict[int, Stage]) -> tuple[Path, list[str], str]:  # fmt: skip
        """(root the sources are relative to, the source patterns, the destination)."""
        words = inst.json_args if inst.json_args is not None else split_words(inst.args)
        words = [expand(w, env, where) for w in words]
        if len(words) < 2:
            raise DockerfileError(f"{where}{inst.cmd} requires at least two arguments")
        src_from = _flag(inst, "from")
        if src_from is None:
            return self.context, words[:-1], words[-1]
        dep = by_name.get(src_from.lower())
        if dep is None and src_from.isdigit():
            dep = next((s for s in built.values() if s.index == int(src_from)), None)
        if dep is None:
            raise BuildError(f"{where}COPY --from={src_from}: no such stage (images: not yet)")
        return Path("/"), words[:-1], words[-1]  # resolved in the stage's mounted root

    def _match(self, root: Path, pattern: str, where: str) -> list[Path]:
        rel = os.path.normpath(pattern.lstrip("/")) if pattern not in ("", ".", "/") else "."
        if rel.startswith(".."):
            rel = "."  # clamped to the context, as Docker does
        if any(ch in rel for ch in "*?["):
            hits = sorted(p for p in root.glob(rel) if not self._ignored(root, p))
        else:
            p = root / rel
            hits = [p] if os.path.lexists(p) else []
        if not hits:
            raise BuildError(f"{where}COPY failed: file not found in build context: {pattern}")
        return hits

    def _ignored(self, root: Path, path: Path) -> bool:
        if root != self.context or not self.ignore:
            return False
        rel = str(path.relative_to(root))
        ignored = False
        for pat in self.ignore:
            neg = pat.startswith("!")
            p = pat[1:] if neg else pat
            if (
                fnmatch.fnmatch(rel, p)
                or fnmatch.fnmatch(rel, p.rstrip("/") + "/*")
                or ("**" in p and fnmatch.fnmatch(rel, p.replace("**/", "*")))
            ):
                ignored = not neg
        return ignored

    def _dockerignore(self) -> list[str]:
        try:
            lines = (self.context / ".dockerignore").read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(os.path.normpath(line.lstrip("/")) if not line.startswith("!") else
                           "!" + os.path.normpath(line[1:].lstrip("/")))  # fmt: skip
        return out

    def _sources_digest(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str,
                        by_name: dict[str, Stage], built: dict[int, Stage]) -> str:  # fmt: skip
        """The content key of what a COPY selects: paths, modes, link targets and bytes."""
        root, patterns, dest = self._sources(stage, inst, env, where, by_name, built)
        if root != self.context:
            src_from = _flag(inst, "from") or ""
            dep = by_name.get(src_from.lower()) or next(
                s for s in built.values() if str(s.index) == src_from
            )
            return _sha("from", dep.key, *patterns, dest)
        h = hashlib.sha256()
        for pattern in patterns:
            for hit in self._match(root, pattern, where):
                for path in (
                    [hit, *sorted(hit.rglob("*"))]
                    if hit.is_dir() and not hit.is_symlink()
                    else [hit]
                ):
                    if self._ignored(root, path):
                        continue
                    st = path.lstat()
                    h.update(f"{path.relative_to(root)}\0{st.st_mode:o}\0".encode())
                    if path.is_symlink():
                        h.update(os.readlink(path).encode())
                    elif path.is_file():
                        with open(path, "rb") as f:
                            while chunk := f.read(1 << 20):
                                h.update(chunk)
        return h.hexdigest()

    def copy(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str,
             by_name: dict[str, Stage], built: dict[int, Stage]) -> None:  # fmt: skip
        root, patterns, dest = self._sources(stage, inst, env, where, by_name, built)
        cfg = stage.config.get("config", {})
        workdir = cfg.get("WorkingDir") or "/"
        dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)
        dest_is_dir = dest.endswith("/") or len(patterns) > 1
        chown = _flag(inst, "chown")
        uid = gid = 0
        if chown:
            spec = expand(chown, env)
            u, _, g = spec.partition(":")
            if u.isdigit() and (not g or g.isdigit()):
                uid, gid = int(u), int(g or u)
            else:
                # Names are looked up in the stage's own /etc/passwd and /etc/group.
                from pyrun.runtime.users import UserError, resolve_user

                with self._mounted(stage) as (rootfs, _upper):
                    try:
                        user = resolve_user(str(rootfs), spec, [])
                    except UserError as e:
                        raise BuildError(f"{where}--chown={chown}: {e}") from None
                uid = user.uid
                gid = user.gid if g else user.uid  # Docker: a user alone means gid = uid
        chmod = _flag(inst, "chmod")
        mode = int(chmod, 8) if chmod else None
        staging = self.store.ensure().new_temp(".copy")
        staging.mkdir()
        try:
            with contextlib.ExitStack() as stack:
                if root != self.context:
                    src_from = _flag(inst, "from") or ""
                    dep = by_name.get(src_from.lower()) or next(
                        s for s in built.values() if str(s.index) == src_from
                    )
                    root, _upper = stack.enter_context(self._mounted(dep))
                hits = [h for p in patterns for h in self._match(root, p, where)]
                if len(hits) > 1:
                    dest_is_dir = True
                target = staging / dest_abs.lstrip("/")
                for hit in hits:
                    if hit.is_dir() and not hit.is_symlink():
                        self._copy_tree(root, hit, target, uid, gid, mode)
                    else:
                        to = target / hit.name if dest_is_dir else target
                        to.parent.mkdir(parents=True, exist_ok=True)
                        self._copy_one(hit, to, uid, gid, mode)
            self._add_layer(stage, staging, overlay_upper=False)
        finally:
            remove_tree(staging)
        self._history(stage, f"{inst.cmd} {inst.args}", False)

    def _copy_tree(self, root: Path, src: Path, dst: Path, uid: int, gid: int,
                   mode: int | None) -> None:  # fmt: skip
        dst.mkdir(parents=True, exist_ok=True)
        os.chown(dst, uid, gid)
        for path in sorted(src.rglob("*")):
            if self._ignored(root, path):
                continue
            to = dst / path.relative_to(src)
            if path.is_dir() and not path.is_symlink():
                to.mkdir(parents=True, exist_ok=True)
                shutil.copystat(path, to)
                os.chown(to, uid, gid)
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                self._copy_one(path, to, uid, gid, mode)

    @staticmethod
    def _copy_one(src: Path, dst: Path, uid: int, gid: int, mode: int | None) -> None:
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
            os.lchown(dst, uid, gid)
            return
        shutil.copy2(src, dst, follow_symlinks=False)
        os.chown(dst, uid, gid)
        if mode is not None:
            os.chmod(dst, mode)

    # --- cache -----------------------------------------------------------------------------
    def _load_cache(self, stage: Stage, key: str) -> bool:
        try:
            data = json.loads((self.cache_dir / f"{key}.json").read_bytes())
        except (OSError, ValueError):
            return False
        diffs = data["config"].get("rootfs", {}).get("diff_ids", [])
        if not all(self.store.has_layer(d) for d in diffs) or not all(
            self.store.has_blob(d["digest"]) for d in data["layers"]
        ):
            return False
        stage.config = data["config"]
        stage.layers = data["layers"]
        stage.args = data.get("args", {})
        stage.shell = data.get("shell", stage.shell)
        stage.cmd_set = bool(data.get("cmd_set"))
        return True

    def _save_cache(self, stage: Stage, key: str) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.cache_dir / f"{key}.json",
            {"config": stage.config, "layers": stage.layers, "args": stage.args,
             "shell": stage.shell, "cmd_set": stage.cmd_set},
            durable=False,
            pretty=False,  # key order kept: the config's bytes (and the image ID) must not change
        )  # fmt: skip

    # --- the image -------------------------------------------------------------------------
    def finish(self, stage: Stage) -> str:
        config = dict(stage.config)
        # The time of the last step, not of this call: a rebuild from the cache gives the very
        # same image (same config, same ID).
        history = config.get("history") or []
        config["created"] = history[-1]["created"] if history else self.now()
        config_bytes = canonical_json(config)
        manifest = canonical_json(oci.image_manifest(config_bytes, stage.layers))
        with self.store.writing():
            self.store.put_blob_bytes(config_bytes)
            digest = self.store.put_blob_bytes(manifest)
            self.store.add_image(digest, self.tags)
        return digest


def _flag(inst: Instruction, name: str) -> str | None:
    values = inst.flags.get(name)
    return values[-1] if values else None


def _kv(args: str, where: str) -> dict[str, str]:
    try:
        return key_values(args)
    except ValueError as e:
        raise DockerfileError(f"{where}{e}") from None


def _env_names(cfg: dict[str, Any]) -> set[str]:
    return {e.partition("=")[0] for e in cfg.get("Env") or []}
