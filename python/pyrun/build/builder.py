"""`pyrun build`: a Dockerfile and a context become an image in the store.

The target's stages (and only the stages it needs) are built, independent ones in parallel
threads. Every instruction of the Dockerfile language: FROM (`scratch`, a stage, an image,
`--platform`), RUN (a container through the pyrun runtime; `--mount=type=cache|bind|tmpfs|
secret`, `--network=default|none|host`; heredocs), COPY/ADD (the context, a stage or an image;
`--chown --chmod --link --parents --exclude`, globs, ADD's tar extraction and URLs), ENV, ARG,
WORKDIR, USER, EXPOSE, VOLUME, LABEL, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, STOPSIGNAL, ONBUILD,
MAINTAINER. A RUN or COPY works on an overlay of the stage's layers; its layer is the diff of
the overlay's upper directory, written by the Rust layer engine.

Cache: a step's key hashes its parent's key, the instruction, the build args it uses and, for
COPY/ADD, the content digests of the selected files (never mtimes). A hit reuses the recorded
state when its layers are still in the store; `--no-cache` skips lookups."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from pyrun import oci
from pyrun.build.context import Context, Matcher
from pyrun.build.parser import (
    DockerfileError,
    Heredoc,
    Instruction,
    directives,
    expand,
    key_values,
    parse_lines,
    split_lines,
    split_words,
    used_names,
    words,
)
from pyrun.build.progress import BuildProgress, Step
from pyrun.errors import PyrunError
from pyrun.reference import Reference
from pyrun.store import Store, now_rfc3339
from pyrun.store.fsutil import atomic_write_json, canonical_json, flocked, remove_tree

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = frozenset(
    n for p in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for n in (p, p.lower())
)  # fmt: skip
FLAGS = {
    "FROM": {"platform"},
    "RUN": {"mount", "network", "security"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"from", "chown", "chmod", "link", "parents", "exclude", "checksum", "keep-git-dir",
            "unpack"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}  # fmt: skip
COMMENT = "buildkit.dockerfile.v0"


class BuildError(PyrunError):
    exit_code = 1

    def __init__(self, message: str, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.tail = tail or []  # a failing RUN's last output lines


class Stage:
    def __init__(self, index: int, name: str | None, base: str, platform: str | None,
                 line: int, instructions: list[Instruction]) -> None:  # fmt: skip
        self.index = index
        self.name = name
        self.base = base
        self.platform = platform
        self.line = line
        self.instructions = instructions
        # The image being built: its config (the whole config blob) and layer descriptors.
        self.config: dict[str, Any] = {}
        self.layers: list[dict[str, Any]] = []
        self.key = ""
        self.args: dict[str, str | None] = {}  # declared ARGs (None: declared, no value)
        self.shell = ["/bin/sh", "-c"]
        self.cmd_set = False  # a CMD ran in this stage (ENTRYPOINT then keeps it)
        self.deps: set[int] = set()

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _go_duration(text: str, where: str) -> int:
    """A Go duration ("30s", "1m30s", "500ms") in nanoseconds."""
    import re

    units = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
             "h": 3600 * 10**9}  # fmt: skip
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise DockerfileError(f"{where}invalid duration {text!r}: e.g. 30s, 1m30s, 500ms")
    return int(sum(float(n) * units[u] for n, u in parts))


def chmod_value(spec: str, current: int, is_dir: bool) -> int:
    """An octal mode, or symbolic (`u+x`, `go-w`, `a=rX`, comma-separated) applied to
    `current`; ValueError when invalid."""
    if spec.isdigit():
        if any(c not in "01234567" for c in spec) or len(spec) > 4:
            raise ValueError(f"invalid chmod parameter: {spec}")
        return int(spec, 8)
    import re

    mode = current & 0o7777
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*)", clause)
        if not m:
            raise ValueError(f"invalid chmod parameter: {spec}")
        who = m.group(1) or "a"
        if "a" in who:
            who = "ugo"
        bits = 0
        for p in m.group(3):
            for w in who:
                shift = {"u": 6, "g": 3, "o": 0}[w]
                if p == "r":
                    bits |= 4 << shift
                elif p == "w":
                    bits |= 2 << shift
                elif p == "x" or (p == "X" and (is_dir or current & 0o111)):
                    bits |= 1 << shift
                elif p == "s" and w in "ug":
                    bits |= 0o4000 if w == "u" else 0o2000
                elif p == "t":
                    bits |= 0o1000
        mask = sum({"u": 0o4700, "g": 0o2070, "o": 0o1007}[w] for w in who)
        op = m.group(2)
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mode = (mode & ~mask) | bits
    return mode


def resolve_in_root(root: Path, path: str, follow_last: bool = True) -> Path:
    """`path` inside `root` with symlinks resolved as if `root` were `/` (they cannot leave it);
    missing components are kept as they are."""
    from pyrun.runtime.users import UserError, secure_join

    try:
        return Path(secure_join(str(root), path, follow_last=follow_last))
    except UserError:
        raise BuildError(f"too many levels of symbolic links in {path}") from None


class Builder:
    def __init__(
        self,
        store: Store,
        context: Path,
        dockerfile: Path | None = None,
        *,
        dockerfile_text: str | None = None,
        tags: list[Reference] | None = None,
        build_args: dict[str, str] | None = None,
        target: str | None = None,
        no_cache: bool = False,
        pull: Any = None,
        always_pull: bool = False,
        platform: str | None = None,
        labels: dict[str, str] | None = None,
        secrets: dict[str, bytes] | None = None,
        out: TextIO | None = None,
        progress: str = "plain",
    ) -> None:
        self.store = store
        self.context_dir = context.resolve()
        if not self.context_dir.is_dir():
            raise BuildError(f"unable to prepare context: path {context} not found")
        self.dockerfile = dockerfile or self.context_dir / "Dockerfile"
        self.dockerfile_text = dockerfile_text
        self.tags = tags or []
        self.build_args = dict(build_args or {})
        self.target = target
        self.no_cache = no_cache
        self.pull = pull  # callable(ref) -> None, for a base image not in the store
        self.always_pull = always_pull
        self.labels = dict(labels or {})
        self.secrets = dict(secrets or {})
        self.out = out or sys.stdout
        self.progress = BuildProgress(self.out, progress)
        self.cache_dir = store.root / "build-cache"
        self.name = self.dockerfile.name if dockerfile_text is None else "Dockerfile"
        host = oci.host_platform()
        self.platform = f"{host['os']}/{host['architecture']}" + (
            f"/{host['variant']}" if host.get("variant") else ""
        )
        if platform:
            self._check_platform(platform, "--platform")
        self.auto_args = {
            **{f"{p}PLATFORM": self.platform for p in ("TARGET", "BUILD")},
            **{f"{p}OS": host["os"] for p in ("TARGET", "BUILD")},
            **{f"{p}ARCH": host["architecture"] for p in ("TARGET", "BUILD")},
            **{f"{p}VARIANT": host.get("variant", "") for p in ("TARGET", "BUILD")},
        }
        ctx_id = _sha(str(self.context_dir))[:32]
        self.context = Context(
            self.context_dir, self.dockerfile, self.cache_dir / "stat" / f"{ctx_id}.json"
        )
        self.cancelled = threading.Event()
        # What a build template (build/template.py) needs to know: whether any step ran or
        # anything was fetched, and which cache records (with their layers and blobs) it used.
        self.steps_run = 0
        self.fetched = False
        self.cache_records: list[Path] = []
        self.cache_layers: list[str] = []
        self.cache_blobs: list[str] = []
        self._images: dict[str, Any] = {}
        self._images_lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}
        # SOURCE_DATE_EPOCH (build arg, else environment): every time in the image (history,
        # created, file mtimes in the layers it makes) is clamped to it: reproducible digests.
        sde = self.build_args.get("SOURCE_DATE_EPOCH", os.environ.get("SOURCE_DATE_EPOCH", ""))
        try:
            self.epoch: int | None = int(sde) if sde != "" else None
        except ValueError:
            raise BuildError(f"invalid SOURCE_DATE_EPOCH {sde!r}: seconds since 1970") from None

    def _check_platform(self, value: str, what: str) -> None:
        plat = oci.parse_platform(value)
        mine = oci.parse_platform(self.platform)
        if (plat.get("os"), plat.get("architecture")) != (mine.get("os"), mine.get("architecture")):
            raise BuildError(
                f"{what}={value}: this machine builds {self.platform} only (no emulation)"
            )

    # --- parsing into stages ---------------------------------------------------------------
    def stages(self) -> tuple[dict[str, str], list[Stage]]:
        if self.dockerfile_text is not None:
            text = self.dockerfile_text
        else:
            try:
                text = self.dockerfile.read_text()
            except OSError as e:
                raise BuildError(f"open {self.dockerfile}: {e.strerror}") from None
        d, first = directives(text, self.name)
        self.escape = d.escape
        insts = parse_lines(split_lines(text), first, d.escape, self.name)
        from pyrun.build.checks import lint

        self.warnings = lint(insts, d.check_skip, split_lines(text), d.escape)
        if d.check_error and self.warnings:
            w = self.warnings[0]
            raise DockerfileError(f"{self.name}:{w.line}: {w.rule}: {w.message} (check=error=true)")
        global_args: dict[str, str] = {}
        stages: list[Stage] = []
        for inst in insts:
            where = f"{self.name}:{inst.line}: "
            allowed = FLAGS.get(inst.cmd, set())
            for flag in inst.flags:
                if flag not in allowed:
                    import difflib

                    close = difflib.get_close_matches(flag, sorted(allowed), n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    raise DockerfileError(f"{where}unknown flag: --{flag} for {inst.cmd}{hint}")
            if inst.cmd == "FROM":
                scope = {**self.auto_args, **global_args}
                ws = words(inst.args, scope, where, d.escape)
                if len(ws) == 3 and ws[1].lower() == "as":
                    name: str | None = ws[2].lower()
                elif len(ws) == 1:
                    name = None
                else:
                    raise DockerfileError(f"{where}FROM requires IMAGE [AS NAME]")
                if not ws[0]:
                    raise DockerfileError(f"{where}FROM: the base image name is empty")
                if name and any(s.name == name for s in stages):
                    raise DockerfileError(f"{where}duplicate stage name {name!r}")
                plat = _flag(inst, "platform")
                plat = expand(plat, scope, where) if plat is not None else None
                stages.append(Stage(len(stages), name, ws[0], plat, inst.line, []))
            elif not stages:
                if inst.cmd != "ARG":
                    raise DockerfileError(
                        f"{where}{inst.cmd} before the first FROM (only ARG may come before it)"
                    )
                for k, v in self._arg_pairs(inst, {**self.auto_args, **global_args}, where):
                    value = self.build_args.get(k, v)
                    if value is not None:
                        global_args[k] = value
            else:
                stages[-1].instructions.append(inst)
        if not stages:
            raise DockerfileError(f"{self.name}: no FROM instruction")
        return global_args, stages

    def _arg_pairs(self, inst: Instruction, env: dict[str, str],
                   where: str) -> list[tuple[str, str | None]]:  # fmt: skip
        out: list[tuple[str, str | None]] = []
        for w in words(inst.args, env, where, self.escape):
            k, eq, v = w.partition("=")
            if not k:
                raise DockerfileError(f"{where}ARG requires a name: ARG NAME[=DEFAULT]")
            out.append((k, v if eq else None))
        return out

    # --- scheduling ------------------------------------------------------------------------
    def build(self) -> str:
        """Build the target stage; returns the image's manifest digest (tagged with tags)."""
        try:
            return self._build()
        finally:
            self.progress.close()

    def _build(self) -> str:
        global_args, stages = self.stages()
        by_name = {s.name: s for s in stages if s.name}
        if self.target:
            target = by_name.get(self.target.lower())
            if target is None:
                raise BuildError(f"target stage {self.target!r} could not be found")
        else:
            target = stages[-1]
        scope = {**self.auto_args, **global_args, **self.build_args}
        for stage in stages:
            base = by_name.get(stage.base.lower())
            if base is not None:
                if base.index >= stage.index:
                    raise BuildError(
                        f"{self.name}:{stage.line}: FROM {stage.base}: a stage can only build "
                        "on an earlier one"
                    )
                stage.deps.add(base.index)
            local = dict(scope)  # the stage's ARG defaults count in --from=$NAME too
            for inst in stage.instructions:
                if inst.cmd == "ARG":
                    with contextlib.suppress(DockerfileError):
                        for k, v in self._arg_pairs(inst, local, ""):
                            if k not in self.build_args and v is not None:
                                local[k] = v
                for src in self._stage_refs(inst, local):
                    dep = self._find_stage(src, stages, by_name)
                    if dep is None:
                        continue
                    if dep.index >= stage.index:
                        raise BuildError(
                            f"{self.name}:{inst.line}: {inst.cmd} --from={src}: a stage can "
                            "only use an earlier one"
                        )
                    stage.deps.add(dep.index)
        needed: set[int] = set()

        def reach(s: Stage) -> None:
            if s.index not in needed:
                needed.add(s.index)
                for d in s.deps:
                    reach(stages[d])

        reach(target)
        self.stages_by_name = by_name
        self.all_stages = stages
        self.global_args = global_args
        self.built: dict[int, Stage] = {}
        # A writer's lease for the whole build: garbage collection must not take the layers of
        # the steps, which no image refers to until the end.
        with self.store.writing():
            self._run_stages(stages, needed)
            self.context.save()
            digest = self.finish(target)
        declared = set(self.global_args) | {
            k for st in stages for i in st.instructions if i.cmd == "ARG"
            for k in (w.partition("=")[0] for w in split_words(i.args))
        }  # fmt: skip
        unused = sorted(
            k for k in self.build_args
            if k not in declared and k not in PROXY_ARGS and k != "SOURCE_DATE_EPOCH"
            and not k.startswith("BUILDKIT_")
        )  # fmt: skip
        if unused:
            self.progress.note(f"[Warning] One or more build-args {unused} were not consumed")
        if self.warnings:
            n = len(self.warnings)
            self.progress.note(f"{n} warning{'s' if n > 1 else ''} found:")
            for w in self.warnings:
                self.progress.note(f" - {w}")
        return digest

    def _run_stages(self, stages: list[Stage], needed: set[int]) -> None:
        """Each needed stage once its dependencies are built; stages that are ready at the
        same time run in parallel threads (at most 4). The first error cancels the rest."""
        pending = set(needed)
        running: dict[int, threading.Thread] = {}
        errors: list[BaseException] = []
        done = threading.Condition()
        finished: list[int] = []

        def work(i: int) -> None:
            try:
                self.build_stage(stages[i])
            except BaseException as e:
                errors.append(e)
                self.cancelled.set()
            with done:
                finished.append(i)
                done.notify()

        while (pending and not errors) or running:
            ready = [i for i in sorted(pending) if stages[i].deps <= set(self.built)]
            if not errors and not running and len(ready) == 1:
                # Alone: nothing else can start before it ends, no thread needed.
                pending.discard(ready[0])
                self.build_stage(stages[ready[0]])
                self.built[ready[0]] = stages[ready[0]]
                continue
            for i in ready[: max(0, 4 - len(running))] if not errors else []:
                pending.discard(i)
                running[i] = threading.Thread(target=work, args=(i,), daemon=True)
                running[i].start()
            if not running:
                break
            with done:
                while not finished:
                    done.wait()
                for i in finished:
                    running.pop(i).join()
                    if not errors:
                        self.built[i] = stages[i]
                finished.clear()
        if errors:
            raise errors[0]

    def _stage_refs(self, inst: Instruction, scope: dict[str, str]) -> list[str]:
        """Stage or image names an instruction reads from (COPY --from, RUN --mount from=)."""
        out = []
        if inst.cmd in ("COPY", "ADD") and _flag(inst, "from") is not None:
            out.append(expand(_flag(inst, "from") or "", scope))
        if inst.cmd == "RUN":
            for m in inst.flags.get("mount", []):
                opts = _mount_options(expand(m, scope), "")
                if "from" in opts:
                    out.append(opts["from"])
        return out

    @staticmethod
    def _find_stage(ref: str, stages: list[Stage], by_name: dict[str, Stage]) -> Stage | None:
        found = by_name.get(ref.lower())
        if found is None and ref.isdigit() and int(ref) < len(stages):
            found = stages[int(ref)]
        return found

    # --- one stage -------------------------------------------------------------------------
    def build_stage(self, stage: Stage) -> None:
        self._from(stage)
        n = len(stage.instructions) + 1
        where = f"{self.name}:{stage.line}: "
        self.progress.step(f"[{stage.label} 1/{n}] FROM {stage.base}").done()
        for step_no, inst in enumerate(stage.instructions, 2):
            if self.cancelled.is_set():
                return
            where = f"{self.name}:{inst.line}: "
            env = self._env(stage)
            extra = ""
            if inst.cmd in ("COPY", "ADD"):
                extra = self._sources_digest(stage, inst, env, where)
            elif inst.cmd == "RUN":
                extra = self._run_key(stage, inst, env, where)
            if inst.cmd == "RUN":
                # A RUN sees every declared build arg (in its environment).
                used = {k: v for k, v in stage.args.items() if k not in PROXY_ARGS}
            else:
                names = used_names(inst.original, self.escape)
                for h in inst.heredocs:
                    names |= used_names(h.content, self.escape) if h.expand else set()
                used = {k: v for k, v in stage.args.items() if k in names}
            key = _sha(
                stage.key, inst.original, json.dumps(used, sort_keys=True),
                json.dumps([list(h) for h in inst.heredocs]), extra, str(self.epoch),
            )  # fmt: skip
            title = f"[{stage.label} {step_no}/{n}] {inst.original}"
            step = self.progress.step(title)
            if not self.no_cache and self._load_cache(stage, key):
                step.cached()
                stage.key = key
                continue
            self.steps_run += 1
            try:
                self.step(stage, inst, env, where, step)
            except BaseException:
                step.failed()
                raise
            step.done()
            stage.key = key
            self._save_cache(stage, key)

    def _from(self, stage: Stage) -> None:
        where = f"{self.name}:{stage.line}: "
        if stage.platform:
            self._check_platform(stage.platform, f"{where}FROM --platform")
        stage.args = {}
        parent = self.stages_by_name.get(stage.base.lower())
        if parent is not None:
            stage.config = json.loads(json.dumps(parent.config))
            stage.layers = list(parent.layers)
            stage.key = _sha("stage", parent.key)
            stage.args = dict(parent.args)
            stage.shell = list(parent.shell)
        elif stage.base == "scratch":
            stage.config = {
                "architecture": oci.host_platform()["architecture"],
                "os": oci.host_platform()["os"],
                "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }
            stage.key = _sha("scratch")
        else:
            rec = self._image(stage.base, where, "FROM")
            stage.config = json.loads(json.dumps(rec.config))
            stage.layers = [dict(d) for d in rec.layers]
            stage.key = _sha("image", rec.manifest_digest)
            base_shell = stage.config.setdefault("config", {}).get("Shell")
            if isinstance(base_shell, list) and base_shell:
                stage.shell = [str(x) for x in base_shell]  # a SHELL the base image set
        stage.config.pop("created", None)
        # ONBUILD triggers of the base run first, and are not inherited further.
        cfg = stage.config.setdefault("config", {})
        triggers = cfg.pop("OnBuild", None) or []
        added = []
        for trigger in triggers:
            try:
                added += parse_lines(split_lines(str(trigger)), 0, self.escape, self.name)
            except DockerfileError as e:
                raise DockerfileError(f"{where}ONBUILD trigger of {stage.base}: {e}") from None
        stage.instructions = [i._replace(line=stage.line) for i in added] + stage.instructions

    def _image(self, ref: str, where: str, what: str) -> Any:
        """An image from the store (pulled when missing, or always with --pull), once per
        build."""
        from pyrun.errors import ImageNotFound

        with self._images_lock:  # one lock per name: stages pull different bases in parallel
            lock = self._image_locks.setdefault(ref, threading.Lock())
        with lock:
            if ref in self._images:
                return self._images[ref]
            try:
                if self.always_pull and self.pull is not None:
                    self.fetched = True
                    self.pull(ref)
                try:
                    rec = self.store.get(ref)
                except ImageNotFound:
                    if self.pull is None:
                        raise
                    self.fetched = True
                    self.pull(ref)
                    rec = self.store.get(ref)
            except PyrunError as e:
                raise BuildError(f"{where}{what} {ref}: {e}") from None
            self._images[ref] = rec
            return rec

    # --- instructions ----------------------------------------------------------------------
    def _env(self, stage: Stage) -> dict[str, str]:
        env = {k: v for k, v in stage.args.items() if v is not None}
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
            {"created": self.now(), "created_by": created_by, "comment": COMMENT,
             **({"empty_layer": True} if empty else {})}
        )  # fmt: skip

    def step(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str,
             step: Step) -> None:  # fmt: skip
        cfg = stage.config.setdefault("config", {})
        cmd = inst.cmd
        if cmd == "RUN":
            self.run(stage, inst, env, where, step)
            return
        if cmd in ("COPY", "ADD"):
            self.copy(stage, inst, env, where)
            return
        if cmd == "ONBUILD":
            inner = inst.args.split(None, 1)[0].upper() if inst.args else ""
            if inner in ("ONBUILD", "FROM", "MAINTAINER", ""):
                raise DockerfileError(f"{where}ONBUILD {inner or 'needs an instruction'}: "
                                      "not allowed as a trigger")  # fmt: skip
            trigger = inst.args + "".join("\n" + h.content + h.name for h in inst.heredocs)
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), trigger]
            self._history(stage, f"ONBUILD {inst.args}", True)
            return
        raw = cmd in ("CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK")
        args = inst.args if raw else expand(inst.args, env, where, self.escape)
        created_by = f"{cmd} {args}"
        if cmd == "ENV":
            pairs = _kv(inst.args, env, where)
            current = list(cfg.get("Env") or [])
            for k, v in pairs.items():  # Docker: a variable set again keeps its place
                at = next((i for i, e in enumerate(current) if e.partition("=")[0] == k), None)
                if at is None:
                    current.append(f"{k}={v}")
                else:
                    current[at] = f"{k}={v}"
            cfg["Env"] = current
            created_by = "ENV " + " ".join(f"{k}={v}" for k, v in pairs.items())
        elif cmd == "ARG":
            for name, default in self._arg_pairs(inst, env, where):
                if name in self.build_args:
                    value: str | None = self.build_args[name]
                elif default is not None:
                    value = default
                elif name in self.global_args:
                    value = self.global_args[name]
                elif name == "TARGETSTAGE":
                    value = stage.label
                else:
                    value = self.auto_args.get(name)
                stage.args[name] = value
            created_by = f"ARG {inst.args}"
        elif cmd == "WORKDIR":
            base = cfg.get("WorkingDir") or "/"
            path = os.path.normpath(os.path.join(base, args.strip()))
            cfg["WorkingDir"] = path
            if self._workdir(stage, path, where):
                self._history(stage, created_by, False)
                return
        elif cmd == "USER":
            cfg["User"] = args.strip()
        elif cmd == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_kv(inst.args, env, where))
            cfg["Labels"] = labels
        elif cmd == "EXPOSE":
            for port in words(inst.args, env, where, self.escape):
                num, _, proto = port.partition("/")
                proto = (proto or "tcp").lower()
                lo, dash, hi = num.partition("-")
                if (
                    not lo.isdigit()
                    or (dash and not hi.isdigit())
                    or proto not in ("tcp", "udp", "sctp")
                ):
                    raise DockerfileError(f"{where}EXPOSE: invalid port {port!r}")
                for p in range(int(lo), int(hi if dash else lo) + 1):
                    cfg.setdefault("ExposedPorts", {})[f"{p}/{proto}"] = {}
        elif cmd == "VOLUME":
            vols = (
                [expand(v, env, where, self.escape) for v in inst.json_args]
                if inst.json_args is not None
                else words(inst.args, env, where, self.escape)
            )
            for v in vols:
                if not v:
                    raise DockerfileError(f"{where}VOLUME specified can not be an empty string")
                cfg.setdefault("Volumes", {})[v] = {}
        elif cmd == "STOPSIGNAL":
            cfg["StopSignal"] = args.strip()
        elif cmd == "SHELL":
            if inst.json_args is None or not inst.json_args:
                raise DockerfileError(
                    f'{where}SHELL requires the JSON form: SHELL ["executable", ...]'
                )
            stage.shell = inst.json_args
            cfg["Shell"] = inst.json_args
        elif cmd in ("CMD", "ENTRYPOINT"):
            form = inst.json_args if inst.json_args is not None else [*stage.shell, inst.args]
            cfg["Cmd" if cmd == "CMD" else "Entrypoint"] = form
            if cmd == "CMD":
                stage.cmd_set = True
            elif not stage.cmd_set:
                cfg["Cmd"] = None  # Docker: ENTRYPOINT resets a CMD inherited from the base
            created_by = f"{cmd} {json.dumps(form)}"
        elif cmd == "MAINTAINER":
            stage.config["author"] = args.strip()
        elif cmd == "HEALTHCHECK":
            cfg["Healthcheck"] = self._healthcheck(stage, inst, env, where)
        self._history(stage, created_by, True)

    def _healthcheck(self, stage: Stage, inst: Instruction, env: dict[str, str],
                     where: str) -> dict[str, Any]:  # fmt: skip
        word, _, rest = inst.args.partition(" ")
        if word.upper() == "NONE":
            if rest.strip() or inst.flags:
                raise DockerfileError(f"{where}HEALTHCHECK NONE takes no arguments")
            return {"Test": ["NONE"]}
        if word.upper() != "CMD" or not rest.strip():
            raise DockerfileError(f"{where}HEALTHCHECK requires NONE or CMD COMMAND")
        rest = rest.strip()
        exec_form = None
        if rest.startswith("["):
            with contextlib.suppress(ValueError):
                v = json.loads(rest)
                if isinstance(v, list) and all(isinstance(x, str) for x in v):
                    exec_form = v
        hc: dict[str, Any] = {
            "Test": ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", rest]
        }
        names = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                 "start-interval": "StartInterval"}  # fmt: skip
        for flag, field in names.items():
            value = _flag(inst, flag)
            if value is not None:
                ns = _go_duration(expand(value, env, where), where)
                if ns and ns < 10**6:
                    raise DockerfileError(f"{where}--{flag} cannot be less than 1ms")
                hc[field] = ns
        retries = _flag(inst, "retries")
        if retries is not None:
            if not retries.isdigit() or int(retries) < 1:
                raise DockerfileError(f"{where}--retries must be at least 1")
            hc["Retries"] = int(retries)
        return hc

    # --- overlay views ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _mounted(self, diff_ids: list[str]) -> Any:
        """An overlay of these layers with a fresh upper dir: (root, upper)."""
        from pyrun import _core

        work = self.store.ensure().new_temp(".build")
        for d in ("rootfs", "upper", "work", "empty"):
            (work / d).mkdir(parents=True)
        lowers = [str(self.store.layer_diff(d)) for d in reversed(diff_ids)] or [
            str(work / "empty")
        ]
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

    @staticmethod
    def _diffs(stage_or_cfg: Stage | dict[str, Any]) -> list[str]:
        cfg = stage_or_cfg.config if isinstance(stage_or_cfg, Stage) else stage_or_cfg
        return list(cfg.get("rootfs", {}).get("diff_ids", []))

    def _add_layer(self, stage: Stage, src: Path, *, overlay_upper: bool) -> bool:
        """A layer of `src` on top of the stage (False, and no layer, when `src` is empty)."""
        from pyrun import _core

        if not any(src.iterdir()):
            return False
        tmp = self.store.new_temp(".layer.tar.gz")
        try:
            _core.create_layer(
                str(src), str(tmp), overlay_upper=overlay_upper, source_date_epoch=self.epoch
            )
            res = self.store.unpack_layer(str(tmp))
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        stage.layers.append(oci.descriptor(oci.OCI_LAYER_GZIP, res["digest"], res["size"]))
        stage.config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(
            res["diff_id"]
        )
        return True

    def _user_ids(
        self, rootfs: Path, spec: str, where: str, what: str, chown: bool = True
    ) -> tuple[int, int]:
        """uid and gid for --chown (a user alone: gid = uid) or for USER (chown=False: the
        user's primary group)."""
        u, _, g = spec.partition(":")
        if chown and u.isdigit() and (not g or g.isdigit()):
            return int(u), int(g or u)
        from pyrun.runtime.users import UserError, resolve_user

        try:
            user = resolve_user(str(rootfs), spec, [])
        except UserError as e:
            raise BuildError(f"{where}{what}: {e}") from None
        return user.uid, (user.gid if g or not chown else user.uid)

    def _workdir(self, stage: Stage, path: str, where: str) -> bool:
        """Create WORKDIR (owned by the current USER) when it is missing; True if a layer
        was added."""
        with self._mounted(self._diffs(stage)) as (rootfs, upper):
            target = resolve_in_root(rootfs, path)
            if target.is_dir():
                return False
            user = stage.config.get("config", {}).get("User") or ""
            uid, gid = self._user_ids(rootfs, user, where, "USER", False) if user else (0, 0)
            made = _makedirs(rootfs, target, 0o755)
            for d in made:
                os.chown(d, uid, gid)
            return self._add_layer(stage, upper, overlay_upper=True)

    # --- RUN -------------------------------------------------------------------------------
    def _run_argv(self, stage: Stage, inst: Instruction) -> tuple[list[str], Heredoc | None]:
        """The command, and the heredoc to run as a file (a lone heredoc with a #! line)."""
        if inst.json_args is not None:
            return list(inst.json_args), None
        if inst.heredocs:
            only = inst.heredocs[0]
            alone = {f"<<{d}{q}{only.name}{q}" for q in ("", "'", '"') for d in ("", "-")}
            if len(inst.heredocs) == 1 and inst.args.strip() in alone:
                if only.content.startswith("#!"):
                    return [f"/dev/pipes/{only.name}"], only
                return [*stage.shell, only.content], None
            script = inst.args + "\n" + "".join(h.content + h.name + "\n" for h in inst.heredocs)
            return [*stage.shell, script], None
        return [*stage.shell, inst.args], None

    def _run_key(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str) -> str:
        """What a RUN's mounts bring in: the content of context binds, the key of stages."""
        parts = []
        for m in inst.flags.get("mount", []):
            opts = _mount_options(expand(m, env, where), where)
            kind = opts.get("type", "bind")
            if kind != "bind":
                continue
            src = opts.get("from")
            if src is None:
                top = self.context_dir / os.path.normpath(opts.get("source", ".").lstrip("/"))
                if not top.exists():
                    continue
                for p in self.context.walk(top):
                    parts.append(f"{self.context.rel(p)}={self.context.file_digest(p)}")
            else:
                dep = self._find_stage(src, self.all_stages, self.stages_by_name)
                parts.append(dep.key if dep is not None else f"image:{src}")
        return _sha(*parts)

    def run(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str,
            step: Step) -> None:  # fmt: skip
        from pyrun.runtime.spec import RunOptions, SpecError, build_spec

        cfg = dict(stage.config.get("config", {}))
        cfg.pop("Volumes", None)  # RUN gets no volumes
        argv, script = self._run_argv(stage, inst)
        network = expand(_flag(inst, "network") or "default", env, where)
        if network not in ("default", "none", "host"):
            raise DockerfileError(f"{where}RUN --network={network}: default, none or host")
        security = _flag(inst, "security") or "sandbox"
        if security != "sandbox":
            raise DockerfileError(
                f"{where}RUN --security={security}: only sandbox (insecure needs an entitlement "
                "pyrun does not grant)"
            )
        declared = {k: v for k, v in stage.args.items() if v is not None}
        names = {e.partition("=")[0] for e in cfg.get("Env") or []}
        run_env = [f"{k}={v}" for k, v in declared.items() if k not in names]
        run_env += [f"{k}={v}" for k, v in self.build_args.items()
                    if k in PROXY_ARGS and k not in declared]  # fmt: skip
        cid = os.urandom(32).hex()  # a container ID (veth names take its first characters)
        cdir = self.store.root / "containers" / cid
        with contextlib.ExitStack() as stack:
            rootfs, upper = stack.enter_context(self._mounted(self._diffs(stage)))
            tmp = self.store.new_temp(".run")
            tmp.mkdir()
            stack.callback(remove_tree, tmp)
            mounts = self._run_mounts(stack, stage, inst, env, where, tmp, run_env)
            if script is not None:
                f = tmp / "pipes" / script.name
                f.parent.mkdir()
                f.write_text(script.content)
                f.chmod(0o755)
                mounts.append({"destination": f"/dev/pipes/{script.name}", "type": "bind",
                               "source": str(f), "options": ["rbind", "ro"]})  # fmt: skip
            opts = RunOptions(command=argv, entrypoint=[], env=run_env,
                              network="host" if network == "host" else "none")  # fmt: skip
            try:
                spec = build_spec(cfg, str(rootfs), opts, cid)
            except (SpecError, PyrunError) as e:
                raise BuildError(f"{where}RUN: {e}") from None
            spec["root"]["path"] = str(rootfs)
            spec["process"]["cwd"] = cfg.get("WorkingDir") or "/"
            # The network: Docker's default bridge for "default", else as asked; the /etc
            # files it needs come from a build container directory (gone afterwards).
            cdir.mkdir(parents=True)
            stack.callback(remove_tree, cdir)
            stack.callback(remove_tree, self.store.run_root / cid)  # its /etc files
            # No container.json (no container command lists it); the builder's pid says whose
            # it is, for `builder prune` after a crash.
            (cdir / "build.pid").write_text(str(os.getpid()))
            net = self._network(cid, network, cfg, stack)
            if net["namespace"] is not None:
                spec["linux"]["namespaces"] = [
                    n for n in spec["linux"]["namespaces"] if n["type"] != "network"
                ] + [net["namespace"]]
            mounts += net["mounts"]
            stubs = [m["destination"] for m in mounts]
            missing = _missing_paths(rootfs, stubs)
            spec["mounts"] += mounts
            bundle = tmp / "bundle"
            bundle.mkdir()
            atomic_write_json(bundle / "config.json", spec, durable=False, pretty=False)
            code = self._exec(bundle, step, where, inst)
            _remove_stubs(rootfs, upper, missing)
            if code != 0:
                step.failed()
                shown = inst.args if not inst.heredocs else inst.original
                raise BuildError(
                    f"{where}RUN {shown!r} did not complete successfully: exit code {code}",
                    list(step.tail),
                )
            added = self._add_layer(stage, upper, overlay_upper=True)
        used = [f"{k}={v}" for k, v in declared.items() if k not in PROXY_ARGS]
        prefix = f"|{len(used)} {' '.join(used)} " if used else ""
        self._history(stage, f"RUN {prefix}{' '.join(argv)} # buildkit", not added)

    def _exec(self, bundle: Path, step: Step, where: str, inst: Instruction) -> int:
        from pyrun import _core

        r, w = os.pipe()

        def pump() -> None:
            while data := os.read(r, 65536):
                step.output(data)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            try:
                return int(_core.run_container(str(bundle), stdio=(w, w)))
            except _core.StartError as e:
                raise BuildError(f"{where}RUN {inst.args}: {e.args[0]}") from None
        finally:
            os.close(w)
            reader.join(timeout=5)
            if not reader.is_alive():
                os.close(r)

    def _network(self, cid: str, mode: str, cfg: dict[str, Any],
                 stack: contextlib.ExitStack) -> dict[str, Any]:  # fmt: skip
        options = {"network": "bridge" if mode == "default" else mode}
        from pyrun.network.attach import release, setup

        net = setup(self.store, cid, cid, options, {}, cfg, cid[:12])
        if mode == "default":
            stack.callback(release, self.store, cid)
        return net

    def _run_mounts(self, stack: contextlib.ExitStack, stage: Stage, inst: Instruction,
                    env: dict[str, str], where: str, tmp: Path,
                    run_env: list[str]) -> list[dict[str, Any]]:  # fmt: skip
        import shutil

        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for n, raw in enumerate(inst.flags.get("mount", [])):
            o = _mount_options(expand(raw, env, where), where)
            kind = o.pop("type", "bind")
            target = o.pop("target", None) or o.pop("dst", None) or o.pop("destination", None)
            if kind == "secret" and not target and "env" not in o:
                target = f"/run/secrets/{o.get('id', '')}"
            if kind != "secret" and not target:
                raise DockerfileError(f"{where}--mount=type={kind} requires target=PATH")
            if target is not None:
                target = os.path.normpath(
                    target if target.startswith("/")
                    else os.path.join(stage.config.get("config", {}).get("WorkingDir") or "/",
                                      target)
                )  # fmt: skip
                if target in seen:
                    raise DockerfileError(f"{where}--mount: {target} is mounted twice")
                seen.add(target)
            ro = _truthy(o.pop("ro", o.pop("readonly", "false")))
            if kind == "bind":
                src = o.pop("from", "") or None
                source = o.pop("source", "") or o.pop("src", "") or "/"
                rw = _truthy(o.pop("rw", o.pop("readwrite", "false")))
                _no_more(o, where, kind)
                root = self._bind_root(stack, stage, src, where, tmp / f"bind{n}")
                path = resolve_in_root(root, source)
                if not path.exists():
                    raise BuildError(f"{where}--mount=type=bind: source {source} not found")
                if rw:  # writes go to a throwaway overlay's upper dir
                    from pyrun import _core

                    view = tmp / f"rw{n}"
                    for d in ("root", "upper", "work"):
                        (view / d).mkdir(parents=True)
                    if path.is_dir():
                        _core.mount_overlay([str(path)], str(view / "root"),
                                            upper=str(view / "upper"), work=str(view / "work"))  # fmt: skip
                        stack.callback(_core.unmount, str(view / "root"), detach=True)
                        path = view / "root"
                    else:
                        shutil.copy2(path, view / "file")
                        path = view / "file"
                out.append({"destination": target, "type": "bind", "source": str(path),
                            "options": ["rbind", "rw" if rw else "ro"]})  # fmt: skip
            elif kind == "cache":
                cache_id = o.pop("id", None) or str(target)
                sharing = o.pop("sharing", "shared")
                if sharing not in ("shared", "private", "locked"):
                    raise DockerfileError(f"{where}--mount=type=cache: sharing={sharing}: "
                                          "shared, private or locked")  # fmt: skip
                mode = int(o.pop("mode", "0755"), 8)
                uid, gid = int(o.pop("uid", "0")), int(o.pop("gid", "0"))
                src = o.pop("from", "") or None
                source = o.pop("source", "") or o.pop("src", "") or "/"
                _no_more(o, where, kind)
                base = self.cache_dir / "mounts" / _sha(cache_id)[:32]
                base.mkdir(parents=True, exist_ok=True)
                if sharing == "locked":  # one build at a time uses it
                    stack.enter_context(flocked(base / "lock"))
                data = base / "data"
                if sharing == "private":
                    data = base / f"private-{os.urandom(6).hex()}"
                    stack.callback(remove_tree, data)
                if not data.exists():
                    fresh = base / f".new-{os.urandom(6).hex()}"
                    if src is not None:
                        root = self._bind_root(stack, stage, src, where, tmp / f"seed{n}")
                        seed = resolve_in_root(root, source)
                        if seed.is_dir():
                            shutil.copytree(seed, fresh, symlinks=True)
                    fresh.mkdir(exist_ok=True)
                    os.chmod(fresh, mode)
                    os.chown(fresh, uid, gid)
                    try:
                        os.rename(fresh, data)
                    except OSError:  # another build made it first
                        remove_tree(fresh)
                out.append({"destination": target, "type": "bind", "source": str(data),
                            "options": ["rbind", "ro" if ro else "rw"]})  # fmt: skip
            elif kind == "tmpfs":
                size = o.pop("size", None)
                _no_more(o, where, kind)
                out.append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "mode=1777",
                                        *([f"size={size}"] if size else [])]})  # fmt: skip
            elif kind == "secret":
                sid = o.pop("id", None) or os.path.basename(str(target or ""))
                env_name = o.pop("env", None)
                required = _truthy(o.pop("required", "false"))
                mode = int(o.pop("mode", "0400"), 8)
                uid, gid = int(o.pop("uid", "0")), int(o.pop("gid", "0"))
                _no_more(o, where, kind)
                value = self.secrets.get(sid)
                if value is None:
                    if required:
                        raise BuildError(f"{where}secret {sid} not found: pass --secret id={sid}")
                    continue
                if env_name:
                    run_env.append(f"{env_name}={value.decode(errors='replace')}")
                if target is not None and (not env_name or "target" in raw or "dst" in raw):
                    f = tmp / f"secret{n}"
                    f.write_bytes(value)
                    os.chown(f, uid, gid)
                    os.chmod(f, mode)
                    out.append({"destination": target, "type": "bind", "source": str(f),
                                "options": ["rbind", "ro"]})  # fmt: skip
            elif kind == "ssh":
                raise DockerfileError(f"{where}--mount=type=ssh: pyrun does not forward an SSH "
                                      "agent; use a secret")  # fmt: skip
            else:
                raise DockerfileError(
                    f"{where}--mount: unknown type {kind!r}: bind, cache, tmpfs or secret"
                )
        return out

    def _bind_root(self, stack: contextlib.ExitStack, stage: Stage, src: str | None, where: str,
                   scratch: Path) -> Path:  # fmt: skip
        """The root a mount's source is read from: the context (only what .dockerignore
        keeps), a built stage, or an image."""
        import shutil

        if src is None:
            if not self.context.ignore:
                return self.context_dir
            scratch.mkdir()
            for p in self.context.walk(self.context_dir)[1:]:
                to = scratch / self.context.rel(p)
                if p.is_dir() and not p.is_symlink():
                    to.mkdir(exist_ok=True)
                    shutil.copystat(p, to)
                elif p.is_symlink():
                    os.symlink(os.readlink(p), to)
                else:
                    try:
                        os.link(p, to)
                    except OSError:
                        shutil.copy2(p, to)
            return scratch
        dep = self._find_stage(src, self.all_stages, self.stages_by_name)
        if dep is not None:
            diffs = self._diffs(self.built[dep.index])
        else:
            diffs = self._diffs(self._image(src, where, "--mount from").config)
        root, _upper = stack.enter_context(self._mounted(diffs))
        return Path(root)

    # --- COPY / ADD ------------------------------------------------------------------------
    def _copy_args(self, inst: Instruction, env: dict[str, str],
                   where: str) -> tuple[list[str], str]:  # fmt: skip
        if inst.json_args is not None:
            ws = [expand(w, env, where, self.escape) for w in inst.json_args]
        else:
            ws = words(inst.args, env, where, self.escape)
        if len(ws) < 2:
            raise DockerfileError(f"{where}{inst.cmd} requires at least two arguments")
        return ws[:-1], ws[-1]

    def _source_root(self, stack: contextlib.ExitStack | None, inst: Instruction,
                     env: dict[str, str], where: str) -> tuple[str, Path | None, str]:  # fmt: skip
        """("context"|"stage"|"image", the mounted root (with a stack), a key part)."""
        src = _flag(inst, "from")
        if src is None:
            return "context", self.context_dir, ""
        src = expand(src, env, where, self.escape)
        dep = self._find_stage(src, self.all_stages, self.stages_by_name)
        if dep is not None:
            done = self.built.get(dep.index)
            if done is None:
                raise BuildError(f"{where}{inst.cmd} --from={src}: the stage is not built")
            root = stack.enter_context(self._mounted(self._diffs(done)))[0] if stack else None
            return "stage", root, done.key
        try:
            rec = self._image(src, where, f"{inst.cmd} --from")
        except BuildError as e:
            raise BuildError(
                f"{where}{inst.cmd} --from={src}: no such stage, and no image: "
                f"{str(e).removeprefix(where)}"
            ) from None
        root = stack.enter_context(self._mounted(self._diffs(rec.config)))[0] if stack else None
        return "image", root, rec.manifest_digest

    def _select(self, root: Path, patterns: list[str], inst: Instruction, where: str,
                kind: str, excludes: Matcher) -> list[tuple[Path, str]]:  # fmt: skip
        """(matched path, its path for --parents) for every source pattern."""
        import glob

        out: list[tuple[Path, str]] = []
        for pattern in patterns:
            pivot = ""
            if "/./" in pattern:
                pivot, _, _ = pattern.partition("/./")
            rel = os.path.normpath(pattern.lstrip("/")) if pattern not in ("", ".", "/") else "."
            while rel.startswith("../") or rel == "..":
                rel = rel[3:] or "."  # clamped to the context, as Docker does
            pairs: list[tuple[Path, str]] = []  # (the path to read, its name as written)
            if any(ch in rel for ch in "*?["):
                # The part before the first wildcard is resolved inside the root (links there
                # followed as the image sees them), the rest globbed from it; a hit whose
                # directory a link took out of the root is dropped.
                parts = rel.split("/")
                k = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
                prefix = "/".join(parts[:k])
                base = resolve_in_root(root, prefix) if k else root
                real_root = os.path.realpath(root).rstrip("/") + "/"
                pattern_rest = os.path.join(glob.escape(str(base)), "/".join(parts[k:]))
                for found in sorted(glob.glob(pattern_rest, recursive="**" in pattern_rest)):
                    h = Path(found)
                    if not (os.path.realpath(h.parent) + "/").startswith(real_root):
                        continue
                    if self._dropped(kind, root, h, excludes):
                        continue
                    pairs.append((h, os.path.join(prefix, os.path.relpath(h, base))))
                if not pairs:
                    continue  # BuildKit: a wildcard with no match is not an error
            else:
                # A source that is a link is followed (inside the root), as Docker does; it
                # keeps its own name.
                p = resolve_in_root(root, rel)
                if not os.path.lexists(p) or (
                    rel != "." and self._dropped(kind, root, p, excludes)
                ):
                    raise BuildError(
                        f"{where}{inst.cmd} failed: file not found in build context: {pattern}"
                        if kind == "context"
                        else f"{where}{inst.cmd} failed: {pattern} not found in --from source"
                    )
                pairs.append((p, rel))
            for h, r in pairs:
                if pivot:
                    r = os.path.relpath(r, os.path.normpath(pivot.lstrip("/") or "."))
                out.append((h, r))
        return out

    def _dropped(self, kind: str, root: Path, p: Path, excludes: Matcher) -> bool:
        if kind == "context" and self.context.ignored(p):
            return True
        return bool(excludes) and excludes.matches(str(p.relative_to(root)))

    def _sources_digest(self, stage: Stage, inst: Instruction, env: dict[str, str],
                        where: str) -> str:  # fmt: skip
        """The content key of what a COPY/ADD selects: paths, modes, owners, xattrs, bytes."""
        patterns, dest = self._copy_args(inst, env, where)
        kind, _root, part = self._source_root(None, inst, env, where)
        flags = json.dumps({k: [expand(v, env, where) for v in vs]
                            for k, vs in sorted(inst.flags.items())})  # fmt: skip
        heredocs = [
            h.content if not h.expand else expand_heredoc(h.content, env) for h in inst.heredocs
        ]
        patterns = [p for p in patterns if not self._heredoc_source(p, inst)]
        if kind != "context":
            return _sha(kind, part, flags, dest, *patterns, *heredocs)
        h = hashlib.sha256(f"{flags}\0{dest}\0{json.dumps(heredocs)}\0".encode())
        excludes = Matcher([expand(e, env, where) for e in inst.flags.get("exclude", [])])
        for pattern in patterns:
            if _is_url(pattern):
                h.update(f"url {pattern}\0{self._download(pattern, inst, where)[1]}".encode())
                continue
            for hit, rel in self._select(self.context_dir, [pattern], inst, where, kind, excludes):
                h.update(f"{pattern}\0{rel}\0".encode())
                for p in self.context.walk(hit, excludes, self.context_dir):
                    h.update(f"{p.relative_to(hit)}\0{self.context.file_digest(p)}\0".encode())
        return h.hexdigest()

    @staticmethod
    def _heredoc_source(pattern: str, inst: Instruction) -> Heredoc | None:
        import re

        m = re.fullmatch(r"<<-?(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", pattern)
        if not m:
            return None
        return next((h for h in inst.heredocs if h.name == m.group(2)), None)

    def _download(self, url: str, inst: Instruction, where: str) -> tuple[Path, str, float | None]:
        """ADD of a URL: (the file, its sha256, Last-Modified as a timestamp)."""
        self.fetched = True
        if not hasattr(self, "_downloads"):
            self._downloads: dict[str, tuple[Path, str, float | None]] = {}
        if url in self._downloads:
            return self._downloads[url]
        import email.utils
        import urllib.error
        import urllib.request

        path = self.store.new_temp(".download")
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(path, "wb") as f:
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
                modified = resp.headers.get("Last-Modified")
        except (urllib.error.URLError, OSError, ValueError) as e:
            path.unlink(missing_ok=True)
            raise BuildError(f"{where}ADD {url}: {getattr(e, 'reason', e)}") from None
        mtime = None
        if modified:
            with contextlib.suppress(TypeError, ValueError):
                mtime = email.utils.parsedate_to_datetime(modified).timestamp()
        checksum = _flag(inst, "checksum")
        if checksum and checksum != f"sha256:{h.hexdigest()}":
            path.unlink(missing_ok=True)
            raise BuildError(
                f"{where}ADD {url}: checksum mismatch: expected {checksum}, got "
                f"sha256:{h.hexdigest()}"
            )
        self._downloads[url] = (path, h.hexdigest(), mtime)
        return self._downloads[url]

    def copy(self, stage: Stage, inst: Instruction, env: dict[str, str], where: str) -> None:
        import shutil

        patterns, dest = self._copy_args(inst, env, where)
        cfg = stage.config.get("config", {})
        workdir = cfg.get("WorkingDir") or "/"
        dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)
        dest_slash = dest.endswith("/") or dest in (".", "") or dest.endswith("/.")
        chown = _flag(inst, "chown")
        chmod = _flag(inst, "chmod")
        if chmod is not None:
            chmod = expand(chmod, env, where)
            try:
                chmod_value(chmod, 0o644, False)
            except ValueError as e:
                raise DockerfileError(f"{where}{e}") from None
        link = _truthy(_flag(inst, "link") or "false")
        parents = _truthy(_flag(inst, "parents") or "false")
        unpack_flag = _flag(inst, "unpack")
        if inst.cmd == "ADD" and _truthy(_flag(inst, "keep-git-dir") or "false"):
            raise DockerfileError(f"{where}ADD --keep-git-dir: git sources are not supported")
        excludes = Matcher([expand(e, env, where) for e in inst.flags.get("exclude", [])])
        with contextlib.ExitStack() as stack:
            kind, src_root, _part = self._source_root(stack, inst, env, where)
            assert src_root is not None
            if link:  # --link: onto an empty layer, independent of what is below
                rootfs = self.store.new_temp(".link")
                rootfs.mkdir()
                stack.callback(remove_tree, rootfs)
                upper = rootfs
                lookup_root = rootfs
            else:
                rootfs, upper = stack.enter_context(self._mounted(self._diffs(stage)))
                lookup_root = rootfs
            if chown:
                with contextlib.ExitStack() as s2:
                    users_root = lookup_root if not link else s2.enter_context(
                        self._mounted(self._diffs(stage)))[0]  # fmt: skip
                    uid, gid = self._user_ids(Path(users_root), expand(chown, env, where),
                                              where, f"--chown={chown}")  # fmt: skip
            else:
                uid = gid = 0
            items: list[
                tuple[str, Any]
            ] = []  # ("heredoc", Heredoc) | ("url", str) | ("path", (p, rel))
            for pattern in patterns:
                h = self._heredoc_source(pattern, inst)
                if h is not None:
                    items.append(("heredoc", h))
                elif _is_url(pattern) and kind == "context":
                    if inst.cmd != "ADD":
                        raise BuildError(f"{where}COPY: source can't be a URL: {pattern} (ADD)")
                    if pattern.startswith("git@") or pattern.endswith(".git"):
                        raise BuildError(f"{where}ADD {pattern}: git sources are not supported")
                    items.append(("url", pattern))
                else:
                    for hit in self._select(src_root, [pattern], inst, where, kind, excludes):
                        items.append(("path", hit))
            if not items:
                self._history(stage, f"{_as_written(inst)} # buildkit", True)
                return
            into_dir = dest_slash or len(items) > 1
            target = resolve_in_root(lookup_root, dest_abs)
            if not into_dir and target.is_dir():
                into_dir = True  # Docker: an existing directory receives the file
            if len(items) > 1 and not dest_slash:
                raise BuildError(
                    f"{where}When using {inst.cmd} with more than one source file, the "
                    "destination must be a directory and end with a /"
                )
            made = _makedirs(lookup_root, target if into_dir else target.parent, 0o755)
            for d in made:
                os.chown(d, uid, gid)
            copier = _Copier(uid if chown else None, gid if chown else None, chmod, self.epoch)
            for what, item in items:
                if what == "heredoc":
                    content = item.content if not item.expand else expand_heredoc(item.content, env)
                    to = target / item.name if into_dir else target
                    _replace_path(to)
                    to.write_text(content)
                    os.chown(to, uid, gid)
                    os.chmod(to, chmod_value(chmod, 0o644, False) if chmod else 0o644)
                elif what == "url":
                    path, _digest, mtime = self._download(item, inst, where)
                    name = os.path.basename(item.split("?")[0].rstrip("/")) or "index.html"
                    to = target / name if into_dir else target
                    _replace_path(to)
                    if unpack_flag is not None and _truthy(unpack_flag) and _archive(path):
                        _extract(
                            path, target, uid if chown else None, gid if chown else None, where
                        )
                        continue
                    shutil.copyfile(path, to)
                    os.chown(to, uid, gid)
                    os.chmod(to, chmod_value(chmod, 0o600, False) if chmod else 0o600)
                    if mtime is not None:
                        os.utime(to, (mtime, mtime))
                else:
                    p, rel = item
                    if (
                        inst.cmd == "ADD"
                        and p.is_file()
                        and not p.is_symlink()
                        and (unpack_flag is None or _truthy(unpack_flag))
                        and _archive(p)
                    ):
                        _extract(p, target, uid if chown else None, gid if chown else None, where)
                        continue
                    if parents:  # links in the image on the way are followed inside it
                        where_to = os.path.join(dest_abs, rel)
                        to = resolve_in_root(lookup_root, where_to, follow_last=False)
                        made = _makedirs(lookup_root, to.parent, 0o755)
                        for d in made:
                            os.chown(d, uid, gid)
                    elif p.is_dir() and not p.is_symlink():
                        to = target
                    else:
                        to = target / os.path.basename(rel) if into_dir else target
                    walker = (
                        self.context.walk(p, excludes, self.context_dir)
                        if kind == "context"
                        else _walk_plain(p, excludes, src_root)
                    )
                    copier.copy(p, to, walker)
            added = self._add_layer(stage, upper, overlay_upper=not link)
        self._history(stage, f"{_as_written(inst)} # buildkit", not added)

    # --- cache -----------------------------------------------------------------------------
    def _load_cache(self, stage: Stage, key: str) -> bool:
        record = self.cache_dir / f"{key}.json"
        try:
            data = json.loads(record.read_bytes())
        except (OSError, ValueError):
            return False
        diffs = data["config"].get("rootfs", {}).get("diff_ids", [])
        blobs = [d["digest"] for d in data["layers"]]
        if not all(self.store.has_layer(d) for d in diffs) or not all(
            self.store.has_blob(d) for d in blobs
        ):
            return False
        self.cache_records.append(record)
        self.cache_layers += diffs
        self.cache_blobs += blobs
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
        config = json.loads(json.dumps(stage.config))
        cfg = config.setdefault("config", {})
        if self.labels:
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **self.labels}
        cfg.pop("Shell", None) if cfg.get("Shell") == ["/bin/sh", "-c"] else None
        # The time of the last step, not of this call: a rebuild from the cache gives the very
        # same image (same config, same ID).
        history = config.get("history") or []
        config["created"] = self.now() if self.epoch is not None or not history else (
            history[-1]["created"]
        )  # fmt: skip
        config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        config_bytes = canonical_json(config)
        manifest = canonical_json(oci.image_manifest(config_bytes, stage.layers))
        with self.store.writing():
            self.store.put_blob_bytes(config_bytes)
            digest = self.store.put_blob_bytes(manifest)
            # A rebuild that changes nothing leaves refs.json alone (no durable rewrite).
            refs = self.store.load_refs()
            if digest not in refs["images"] or any(
                refs["tags"].get(str(t)) != digest for t in self.tags
            ):
                self.store.add_image(digest, self.tags)
        return digest


class _Copier:
    """Copies files into a root: owners (--chown, else 0:0), modes (--chmod), mtimes kept."""

    def __init__(self, uid: int | None, gid: int | None, chmod: str | None,
                 epoch: int | None) -> None:  # fmt: skip
        self.uid = uid
        self.gid = gid
        self.chmod = chmod
        self.epoch = epoch

    def copy(self, src: Path, dst: Path, walker: list[Path]) -> None:
        import shutil

        for p in walker:
            to = dst if p == src else dst / p.relative_to(src)
            st = p.lstat()
            uid = self.uid if self.uid is not None else 0
            gid = self.gid if self.gid is not None else 0
            if stat.S_ISDIR(st.st_mode):
                if to.is_symlink() or (to.exists() and not to.is_dir()):
                    _replace_path(to)
                to.mkdir(parents=True, exist_ok=True)
                mode = chmod_value(self.chmod, st.st_mode, True) if self.chmod else st.st_mode
            else:
                _replace_path(to)
                to.parent.mkdir(parents=True, exist_ok=True)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(p), to)
                    os.lchown(to, uid, gid)
                    continue
                if stat.S_ISREG(st.st_mode):
                    shutil.copyfile(p, to, follow_symlinks=False)
                else:  # devices, fifos: as they are (root only)
                    os.mknod(to, st.st_mode, st.st_rdev)
                mode = chmod_value(self.chmod, st.st_mode, False) if self.chmod else st.st_mode
            os.chown(to, uid, gid)
            os.chmod(to, stat.S_IMODE(mode))
            os.utime(to, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        # Directory mtimes last: filling them changed them.
        for p in reversed(walker):
            if p.is_dir() and not p.is_symlink():
                to = dst if p == src else dst / p.relative_to(src)
                st = p.lstat()
                os.utime(to, ns=(st.st_atime_ns, st.st_mtime_ns))


def expand_heredoc(text: str, env: dict[str, str]) -> str:
    """A COPY heredoc with an unquoted delimiter: `$v`/`${...}` expanded, quotes kept."""
    import re

    out = []
    for piece in re.split(r"(\\\$|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)", text):
        if piece == "\\$":
            out.append("$")
        elif piece.startswith("$") and len(piece) > 1:
            out.append(expand(piece, env))
        else:
            out.append(piece)
    return "".join(out)


def _walk_plain(top: Path, excludes: Matcher, root: Path) -> list[Path]:
    out = [top]
    if top.is_dir() and not top.is_symlink():
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                if not (excludes and excludes.matches(str(p.relative_to(root)))):
                    out.append(p)
    return out


def _makedirs(root: Path, target: Path, mode: int) -> list[Path]:
    """mkdir -p inside root (target already resolved); returns the directories made."""
    made: list[Path] = []
    missing = []
    p = target
    while p != root and not p.is_dir():
        if os.path.lexists(p):
            raise BuildError(f"cannot create directory /{p.relative_to(root)}: not a directory")
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        os.chmod(d, mode)
        made.append(d)
    return made


def _replace_path(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        remove_tree(p)
    elif os.path.lexists(p):
        p.unlink()


def _missing_paths(rootfs: Path, destinations: list[str]) -> list[tuple[str, Any]]:
    """The mount points (and their parents) a run will have to create in the root, deepest
    first, each with None; and the existing directories above them, with their owner and
    mode (the run copies those up to create the mount points)."""
    out: dict[str, Any] = {}
    for d in destinations:
        parts = [x for x in d.split("/") if x]
        if not parts or parts[0] in ("dev", "proc", "sys"):
            continue
        for k in range(1, len(parts) + 1):
            sub = "/".join(parts[:k])
            p = rootfs / sub
            if not os.path.lexists(p):
                out[sub] = None
            elif k < len(parts) and p.is_dir() and not p.is_symlink():
                st = p.lstat()
                out[sub] = (st.st_mode, st.st_uid, st.st_gid)
    return sorted(out.items(), key=lambda kv: -kv[0].count("/"))


def _remove_stubs(rootfs: Path, upper: Path, paths: list[tuple[str, Any]]) -> None:
    """Mount points the runtime made (empty files, empty directories) leave the layer, and so
    do directories that were copied up only to hold them (empty, unchanged owner and mode)."""
    for sub, before in paths:
        p = upper / sub
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                if before is not None:
                    st = p.lstat()
                    if (st.st_mode, st.st_uid, st.st_gid) != before or _opaque(p):
                        continue
                p.rmdir()  # only when empty
            elif before is None and p.is_file() and p.stat().st_size == 0:
                p.unlink()


def _opaque(p: Path) -> bool:
    try:
        return os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _archive(path: Path) -> bool:
    import tarfile

    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        with contextlib.suppress(Exception):
            return tarfile.is_tarfile(path)
        return False
    return len(head) >= 262 and head[257:262] == b"ustar"


def _extract(path: Path, dest: Path, uid: int | None, gid: int | None, where: str = "") -> None:
    """ADD's extraction of a local tar (plain, gzip, bzip2, xz): owners and modes as in the
    archive (or --chown), nothing outside `dest`."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)

    def keep(member: tarfile.TarInfo, where: str) -> tarfile.TarInfo:
        tarfile.tar_filter(member, where)  # refuses absolute paths, .. and links outside
        if uid is not None:
            member.uid, member.gid = uid, gid if gid is not None else uid
        return member

    try:
        with tarfile.open(path, "r:*") as tf:
            tf.extractall(dest, numeric_owner=True, filter=keep)
    except (tarfile.TarError, OSError) as e:
        raise BuildError(f"{where}ADD: cannot extract {path.name}: {e}") from None


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://", "git@", "git://"))


def _as_written(inst: Instruction) -> str:
    """The instruction with its flags, as BuildKit's history shows it."""
    return inst.cmd + inst.original[len(inst.original.split(" ", 1)[0]) :]


def _flag(inst: Instruction, name: str) -> str | None:
    values = inst.flags.get(name)
    return values[-1] if values else None


def _truthy(v: str) -> bool:
    return v.lower() in ("", "true", "1", "yes")


def _mount_options(text: str, where: str) -> dict[str, str]:
    import csv

    out: dict[str, str] = {}
    for field in next(csv.reader([text])) if text else []:
        k, eq, v = field.partition("=")
        k = k.strip().lower()
        if not eq and k in ("ro", "readonly", "rw", "readwrite", "required"):
            v = "true"
        elif not eq:
            raise DockerfileError(f"{where}--mount: invalid field {field!r}: KEY=VALUE")
        out[k] = v
    return out


def _no_more(o: dict[str, str], where: str, kind: str) -> None:
    if o:
        raise DockerfileError(f"{where}--mount=type={kind}: unexpected option {sorted(o)[0]!r}")


def _kv(args: str, env: dict[str, str], where: str) -> dict[str, str]:
    try:
        return key_values(args, env, where)
    except ValueError as e:
        raise DockerfileError(f"{where}{e}") from None


def prune_cache(store: Store, *, all_entries: bool = False) -> int:
    """`pyrun builder prune`: drop the build cache records no tagged image is made of (with
    `all_entries`: every record, the cache mounts and the context stat caches); the layers
    only they held go at the next garbage collection. Returns how many records went."""
    _remove_stale_run_dirs(store)
    d = store.root / "build-cache"
    if not d.is_dir():
        return 0
    used: set[str] = set()
    if not all_entries:
        with contextlib.suppress(Exception):
            refs = store.load_refs()
            for digest in set(refs["tags"].values()):
                with contextlib.suppress(Exception):
                    cfg = json.loads(store.read_blob(refs["images"][digest]["config"]))
                    used.update(cfg.get("rootfs", {}).get("diff_ids", []))
    removed = 0
    for rec in d.glob("*.json"):
        if not all_entries:
            with contextlib.suppress(OSError, ValueError):
                diffs = json.loads(rec.read_bytes())["config"]["rootfs"]["diff_ids"]
                if set(diffs) <= used:
                    continue
        rec.unlink(missing_ok=True)
        removed += 1
    if all_entries:
        for sub in ("mounts", "stat"):
            remove_tree(d / sub)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_mounts(store: Store) -> None:
    """Overlay views (tmp/PID-*) that builders which died left mounted: unmounted and removed
    (garbage collection empties tmp/ and cannot remove a mount point)."""
    from pyrun import _core

    tmp = store.root / "tmp"
    stale = []
    for entry in tmp.glob("*-*"):
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            stale.append(str(entry))
    if not stale:
        return
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted(points, key=len, reverse=True):
        if any(point.startswith(s + "/") or point == s for s in stale):
            with contextlib.suppress(OSError):
                _core.unmount(point, detach=True)
    for s in stale:
        remove_tree(Path(s))


def _remove_stale_run_dirs(store: Store) -> None:
    """RUN steps' container directories (and networks) left by builders that died."""
    _remove_stale_mounts(store)
    for pidfile in (store.root / "containers").glob("*/build.pid"):
        try:
            if _pid_alive(int(pidfile.read_text())):
                continue  # its builder still runs
        except (OSError, ValueError):
            continue
        cid = pidfile.parent.name
        if (store.root / "networks").is_dir():
            from pyrun.network.attach import release

            with contextlib.suppress(Exception):
                release(store, cid)
        remove_tree(pidfile.parent)
