"""`pyrun build` and `pyrun builder prune` (kept apart from the image commands: a no-op
rebuild should import little more than the builder)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from pyrun.errors import PyrunError
from pyrun.reference import parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyrun.build.template import Tee
    from pyrun.store import Store


class UsageError(PyrunError):
    exit_code = 125


def _stdin_context(args: argparse.Namespace, tmp: str) -> tuple[Path, Path | None, str | None]:
    """A context from stdin: a tar (plain or compressed; -f names the Dockerfile in it), or a
    Dockerfile with an empty context. (context dir, Dockerfile path, Dockerfile text)."""
    import io
    import tarfile

    data = sys.stdin.buffer.read()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            tf.extractall(tmp, filter="tar")
    except tarfile.TarError:  # not a tar: the Dockerfile itself, with an empty context
        return Path(tmp), None, data.decode(errors="replace")
    return Path(tmp), (Path(tmp) / args.file) if args.file else None, None


def _parse_secret(item: str) -> tuple[str, bytes]:
    fields = dict(f.partition("=")[::2] for f in item.split(","))
    sid = fields.get("id") or ""
    if not sid:
        raise UsageError(f"invalid --secret {item!r}: id=ID,src=FILE or id=ID,env=VAR")
    if "env" in fields:
        value = os.environ.get(fields["env"])
        if value is None:
            raise UsageError(f"--secret {item}: environment variable {fields['env']} is not set")
        return sid, value.encode()
    src = fields.get("src") or fields.get("source")
    if not src:  # buildx: an environment variable named like the id
        value = os.environ.get(sid)
        if value is None:
            raise UsageError(f"invalid --secret {item!r}: src=FILE or env=VAR needed")
        return sid, value.encode()
    try:
        with open(os.path.expanduser(src), "rb") as f:
            return sid, f.read()
    except OSError as e:
        raise UsageError(f"--secret {item}: {e.strerror}: {src}") from None


def cmd_build(args: argparse.Namespace) -> int:
    from pyrun.store import Store, default_root

    store = Store(default_root()).ensure()

    def pull(ref: str) -> None:
        from pyrun.client import Client

        Client(store.root).images.pull(ref)

    build_args = {}
    for item in args.build_arg:
        k, eq, v = item.partition("=")
        if not k:
            raise UsageError(f"invalid --build-arg {item!r}: expected KEY=VALUE")
        build_args[k] = v if eq else os.environ.get(k, "")
    labels = {}
    for item in args.label:
        k, eq, v = item.partition("=")
        if not k:
            raise UsageError(f"invalid --label {item!r}: expected KEY=VALUE")
        labels[k] = v
    outputs = []
    for item in args.output:
        fields = dict(f.partition("=")[::2] for f in item.split(","))
        kind = fields.get("type", "")
        dest = fields.get("dest", "")
        if kind not in ("oci", "docker") or not dest:
            raise UsageError(f"invalid --output {item!r}: type=oci|docker,dest=FILE")
        outputs.append((kind, dest))
    secrets = dict(_parse_secret(s) for s in args.secret)
    # A line the `pyrun` executable handed over may get a build template (build/template.py):
    # what the build prints is kept for it.
    line = getattr(args, "line_template", None)
    tees = None
    if line is not None:
        from pyrun.build import template

        if template.expressible(args):
            tees = (template.Tee(sys.stdout), template.Tee(sys.stderr))
            sys.stdout, sys.stderr = tees
    try:
        status = _build(args, store, build_args, labels, outputs, secrets, tees)
    finally:
        if tees is not None:
            sys.stdout, sys.stderr = tees[0].stream, tees[1].stream
    return status


def _build(
    args: argparse.Namespace,
    store: Store,
    build_args: dict[str, str],
    labels: dict[str, str],
    outputs: list[tuple[str, str]],
    secrets: dict[str, bytes],
    tees: tuple[Tee, Tee] | None,
) -> int:
    from pyrun.build.builder import Builder, BuildError

    def pull(ref: str) -> None:
        from pyrun.client import Client

        Client(store.root).images.pull(ref)

    to_stdout = any(dest == "-" for _, dest in outputs)
    stream = sys.stderr if to_stdout else sys.stdout
    mode = args.progress
    if args.quiet:
        mode = "quiet"
    elif mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    tags = [parse(t) for t in args.tag]
    if args.context == "-" and args.file == "-":
        raise UsageError("the context and the Dockerfile cannot both come from stdin")
    with contextlib.ExitStack() as stack:
        text = None
        if args.context == "-":
            import tempfile

            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(dir=store.root / "tmp", prefix="context-")
            )
            context, dockerfile, text = _stdin_context(args, tmp)
        else:
            context = Path(args.context)
            dockerfile = Path(args.file) if args.file and args.file != "-" else None
            if args.file == "-":
                text = sys.stdin.read()
        builder = Builder(
            store,
            context,
            dockerfile,
            dockerfile_text=text,
            tags=tags,
            build_args=build_args,
            target=args.target,
            no_cache=args.no_cache,
            pull=pull,
            always_pull=args.pull,
            platform=args.platform,
            labels=labels,
            secrets=secrets,
            out=stream,
            progress=mode,
        )
        try:
            digest = builder.build()
        except BuildError as e:
            if e.tail and mode != "plain":
                print("\n".join(e.tail), file=stream)
            raise
    image_id = store.get(digest).id
    if outputs:
        from pyrun.client import Client

        client = Client(store.root)
    for kind, dest in outputs:
        ref = f":{tags[0].familiar()}" if tags else ""
        transport = "oci-archive" if kind == "oci" else "docker-archive"
        if dest == "-":
            import tempfile

            with tempfile.TemporaryDirectory(dir=store.root / "tmp") as d:
                path = os.path.join(d, "image.tar")
                client.images.copy(digest, f"{transport}:{path}{ref}")
                import shutil

                with open(path, "rb") as f:
                    shutil.copyfileobj(f, sys.stdout.buffer)
                sys.stdout.buffer.flush()
        else:
            client.images.copy(digest, f"{transport}:{dest}{ref}")
    if args.iidfile:
        from pyrun.store.fsutil import atomic_write

        atomic_write(Path(args.iidfile), image_id.encode())
    if to_stdout:
        return 0
    if args.quiet:
        print(image_id)
    else:
        print(f"writing image {image_id}", file=stream)
        for t in tags:
            print(f"naming to {t.familiar()}", file=stream)
    if tees is not None:
        from pyrun.build import template
        from pyrun.runtime.template import save

        recipe = template.capture(store, builder, args, tees[0].text, tees[1].text, image_id)
        if recipe is not None:
            with contextlib.suppress(OSError):
                save(store, "build", args.line_template[0], recipe)
    return 0


def cmd_builder_prune(args: argparse.Namespace) -> int:
    from pyrun.build.builder import prune_cache
    from pyrun.store import Store, default_root

    store = Store(default_root()).ensure()
    removed = prune_cache(store, all_entries=args.all)
    result = store.gc()
    print(f"Deleted build cache objects: {removed}")
    print(f"Total reclaimed space: {result.bytes_freed} B")
    return 0
