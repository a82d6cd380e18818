"""Image commands: import, save, load, images, inspect, history, tag, rmi, image prune/copy."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pyrun.cli.output import human_ago, human_size, print_json, table
from pyrun.client import Client
from pyrun.errors import PyrunError
from pyrun.reference import parse


class UsageError(PyrunError):
    exit_code = 125


def _client() -> Client:
    return Client()


@contextlib.contextmanager
def _input_file(path: str | None, client: Client) -> Iterator[Path]:
    """A seekable file for `path`, or standard input spooled into the store's tmp/."""
    if path not in (None, "-"):
        yield Path(path)
        return
    if sys.stdin.isatty():
        raise UsageError(
            "requested load from stdin, but stdin is a terminal: use -i FILE or a pipe"
        )
    tmp = client.store.new_temp(".stdin")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def cmd_import(args: argparse.Namespace) -> int:
    client = _client()
    with _input_file(args.file, client) as path:
        img = client.images.import_image(
            path, args.repository, changes=args.change, message=args.message, platform=args.platform
        )
    print(img.id)
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    client = _client()
    if args.output:
        client.images.save(args.images, args.output, format=args.format)
        return 0
    if sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    tmp = client.store.new_temp(".save")
    try:
        client.images.save(args.images, tmp, format=args.format)
        with open(tmp, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
        sys.stdout.flush()
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    client = _client()
    with _input_file(args.input, client) as path:
        images = client.images.load(path, platform=args.platform)
    for img in images:
        if img.tags:
            for t in img.tags:
                print(f"Loaded image: {t}")
        else:
            print(f"Loaded image ID: {img.id}")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    client = _client()
    images = client.images.list(args.repository)
    if args.quiet:
        seen = set()
        for img in images:
            ident = img.id if args.no_trunc else img.short_id
            if ident not in seen:
                seen.add(ident)
                print(ident)
        return 0
    rows = []
    records = []
    for img in images:
        attrs = img.attrs
        tags: list[str | None] = list(img.record.tags) or [None]
        for t in tags:
            repo, tag = ("<none>", "<none>") if t is None else parse(t).familiar().rsplit(":", 1)
            digest = img.record.manifest_digest
            records.append(
                {
                    "Repository": repo,
                    "Tag": tag,
                    "ID": img.id,
                    "Digest": digest,
                    "CreatedAt": attrs["Created"],
                    "Size": attrs["Size"],
                }
            )
            row = [repo, tag]
            if args.digests:
                row.append(digest)
            row += [
                img.id if args.no_trunc else img.short_id,
                human_ago(attrs["Created"]),
                human_size(attrs["Size"]),
            ]
            rows.append(row)
    if args.format == "json":
        for r in records:
            print(json.dumps(r))
        return 0
    if args.format not in (None, "table"):
        raise UsageError(f"unsupported --format {args.format!r}: use json or table")
    header = (
        ["REPOSITORY", "TAG"]
        + (["DIGEST"] if args.digests else [])
        + ["IMAGE ID", "CREATED", "SIZE"]
    )
    table(rows, header)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Images by default; `pyrun inspect` (top level) also finds containers, as Docker's does."""
    client = _client()
    out = []
    missing = []
    for name in args.images:
        try:
            out.append(client.images.get(name).attrs)
            continue
        except PyrunError as e:
            message = str(e)
        if args.command == "inspect":
            try:
                out.append(client.containers.get(name).attrs)
                continue
            except PyrunError:
                message = f"No such object: {name}"
        missing.append(message)
    print_json(out)
    for m in missing:
        print(f"Error: {m}", file=sys.stderr)
    return 1 if missing else 0


def cmd_history(args: argparse.Namespace) -> int:
    rows = _client().images.get(args.image).history()
    if args.format == "json":
        for r in rows:
            print(json.dumps(r))
        return 0
    if args.quiet:
        for r in rows:
            print(r.get("Id", "<missing>")[7:19] if "Id" in r else "<missing>")
        return 0
    table_rows = []
    for r in rows:
        ident = r.get("Id", "<missing>")
        ident = ident if args.no_trunc or ident == "<missing>" else ident[7:19]
        created_by = (
            r["CreatedBy"]
            if args.no_trunc or len(r["CreatedBy"]) <= 45
            else r["CreatedBy"][:44] + "…"
        )
        table_rows.append(
            [ident, human_ago(r["Created"]), created_by, human_size(r["Size"]), r["Comment"]]
        )
    table(table_rows, ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"])
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    client = _client()
    client.store.tag(args.source, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    client = _client()
    status = 0
    for name in args.images:
        try:
            for event in client.images.remove(name, force=args.force):
                for k, v in event.items():
                    print(f"{k}: {v}")
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


def cmd_prune(args: argparse.Namespace) -> int:
    res = _client().images.prune(all=args.all)
    if res["ImagesDeleted"]:
        print("Deleted Images:")
        for d in res["ImagesDeleted"]:
            print(f"deleted: {d['Deleted']}")
        print()
    print(f"Total reclaimed space: {human_size(res['SpaceReclaimed'])}")
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    say = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    digest = _client().images.copy(
        args.source, args.destination, platform=args.platform, progress=say
    )
    if not args.quiet:
        print(f"Copied {args.source} -> {args.destination}: {digest}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _progress(quiet: bool, verb: str) -> Iterator[Callable[[str], None] | None]:
    """-q: nothing; stderr a terminal: bars per layer there; else plain lines on stdout."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield lambda line: print(line, flush=True)
        return
    from pyrun.progress import Bars

    bars = Bars(sys.stderr, verb)
    try:
        yield bars
    finally:
        bars.close()


def cmd_pull(args: argparse.Namespace) -> int:
    from pyrun.reference import parse

    ref = parse(args.image)
    if ref.tag is None and ref.digest is None:
        ref = ref._replace(tag="latest")
        if not args.quiet:
            print("Using default tag: latest", file=sys.stderr)
    with _progress(args.quiet, "pull") as say:
        img = _client().images.pull(str(ref), platform=args.platform, progress=say)
    if args.quiet:
        print(ref.familiar())
    else:
        print(f"Digest: {img.record.manifest_digest}")
        print(f"Status: Downloaded newer image for {ref.familiar()}")
        print(ref.familiar())
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from pyrun.reference import parse

    ref = parse(args.image)
    if ref.tag is None:
        ref = ref._replace(tag="latest")
    with _progress(args.quiet, "push") as say:
        digest = _client().images.push(str(ref), progress=say)
    if args.quiet:
        print(digest)
    else:
        print(f"{ref.tag}: digest: {digest}")
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from pyrun.registry.client import Registry, save_credentials

    user = args.username
    password = args.password
    if args.password_stdin:
        if password is not None:
            raise PyrunError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\n")
    if user is None or password is None:
        raise PyrunError("login needs -u USER and a password (-p or --password-stdin)")
    reg = Registry(args.server)
    try:
        reg.check_login(user, password)
    finally:
        reg.close()
    save_credentials(args.server, user, password)
    print("Login Succeeded")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from pyrun.registry.client import save_credentials

    save_credentials(args.server, None, None)
    print(f"Removing login credentials for {args.server}")
    return 0


def cmd_manifest_inspect(args: argparse.Namespace) -> int:
    import json

    from pyrun.reference import parse
    from pyrun.registry.client import Registry

    ref = parse(args.image)
    reg = Registry(ref.domain)
    try:
        data, media_type, digest = reg.get_manifest(ref.path, ref.digest or ref.tag or "latest")
    finally:
        reg.close()
    obj = json.loads(data)
    if args.verbose:
        obj = {"Ref": str(ref), "Descriptor": {"mediaType": media_type, "digest": digest,
               "size": len(data)}, "Manifest": obj}  # fmt: skip
    print(json.dumps(obj, indent=4))
    return 0


def cmd_manifest_rm(args: argparse.Namespace) -> int:
    client = _client()
    status = 0
    for name in args.images:
        try:
            digest = client.images.delete_remote(name)
            print(f"Deleted: {parse(name).name}@{digest}")
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


def cmd_tags(args: argparse.Namespace) -> int:
    ref = parse(args.repository, default_tag=False)
    if ref.tag is not None or ref.digest is not None:
        raise UsageError(f"{args.repository}: name a repository, without a tag or digest")
    tags = _client().images.list_tags(args.repository)
    if args.format == "json":
        print(json.dumps({"Repository": ref.name, "Tags": tags}, indent=4))
    elif args.format in (None, "table"):
        for t in tags:
            print(t)
    else:
        raise UsageError(f"unsupported --format {args.format!r}: use json")
    return 0


def _build_context(args: argparse.Namespace, tmp: str) -> tuple[Path, Path | None, str | None]:
    """(context dir, Dockerfile path or None, Dockerfile text from stdin or None)."""
    import io
    import tarfile

    if args.context == "-" and args.file == "-":
        raise UsageError("the context and the Dockerfile cannot both come from stdin")
    if args.file == "-":
        return Path(args.context), None, sys.stdin.read()
    if args.context != "-":
        ctx = Path(args.context)
        dockerfile = Path(args.file) if args.file else None
        return ctx, dockerfile, None
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
    import tempfile

    from pyrun.build.builder import Builder, BuildError

    client = _client()
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
    to_stdout = any(dest == "-" for _, dest in outputs)
    stream = sys.stderr if to_stdout else sys.stdout
    mode = args.progress
    if args.quiet:
        mode = "quiet"
    elif mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    tags = [parse(t) for t in args.tag]
    store = client.store.ensure()
    with tempfile.TemporaryDirectory(dir=store.root / "tmp", prefix="context-") as tmp:
        context, dockerfile, text = _build_context(args, tmp)
        builder = Builder(
            client.store,
            context,
            dockerfile,
            dockerfile_text=text,
            tags=tags,
            build_args=build_args,
            target=args.target,
            no_cache=args.no_cache,
            pull=lambda ref: client.images.pull(ref),
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
    image_id = client.store.get(digest).id
    for kind, dest in outputs:
        ref = f":{tags[0].familiar()}" if tags else ""
        transport = "oci-archive" if kind == "oci" else "docker-archive"
        if dest == "-":
            with tempfile.TemporaryDirectory(dir=store.root / "tmp") as d:
                path = os.path.join(d, "image.tar")
                client.images.copy(digest, f"{transport}:{path}{ref}")
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
    return 0


def cmd_builder_prune(args: argparse.Namespace) -> int:
    from pyrun.build.builder import prune_cache

    client = _client()
    removed = prune_cache(client.store, all_entries=args.all)
    result = client.store.gc()
    print(f"Deleted build cache objects: {removed}")
    print(f"Total reclaimed space: {result.bytes_freed} B")
    return 0
