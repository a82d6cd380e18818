"""Image commands: import, save, load, images, inspect, history, tag, rmi, image prune/copy."""

from __future__ import annotations

import argparse
import contextlib
import json
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
            # The digest the registry knows this repository's image by (an index's digest for
            # a multi-platform pull, as Docker shows), else this manifest's.
            digest = next(
                (d.split("@", 1)[1] for d in attrs["RepoDigests"] if d.split("@", 1)[0] == repo),
                img.record.manifest_digest,
            )
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
        args.source, args.destination, platform=args.platform, progress=say,
        all=args.all, referrers=args.referrers,
    )  # fmt: skip
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
        img = _client().images.pull(
            str(ref), platform=args.platform, progress=say, all_platforms=args.all_platforms
        )
    if args.quiet:
        print(ref.familiar())
    else:
        digest = next(
            (d.rsplit("@", 1)[1] for d in img.attrs["RepoDigests"] if parse(d).name == ref.name),
            img.record.manifest_digest,
        )
        print(f"Digest: {digest}")
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
    from pyrun.registry.client import Registry, credential_key, save_credentials, server_domain

    user = args.username
    password = args.password
    if args.password_stdin:
        if password is not None:
            raise PyrunError("--password and --password-stdin are mutually exclusive")
        if user is None:
            raise PyrunError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\n")
    domain = server_domain(args.server)
    if user is None or password is None:
        # Docker's prompts, on a terminal only.
        if not sys.stdin.isatty():
            raise PyrunError("Cannot perform an interactive login from a non TTY device")
        print(f"Login with your username and password for {credential_key(domain)}")
        if user is None:
            user = input("Username: ").strip()
            if not user:
                raise PyrunError("Username is required")
        if password is None:
            import getpass

            password = getpass.getpass("Password: ")
            if not password:
                raise PyrunError("Password is required")
    reg = Registry(domain)
    try:
        reg.check_login(user, password)
    finally:
        reg.close()
    save_credentials(credential_key(domain), user, password)
    print("Login Succeeded")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from pyrun.registry.client import credential_key, save_credentials, server_domain

    key = credential_key(server_domain(args.server))
    save_credentials(key, None, None)
    print(f"Removing login credentials for {key}")
    return 0


def cmd_manifest_inspect(args: argparse.Namespace) -> int:
    from pyrun import oci
    from pyrun.reference import parse
    from pyrun.registry.client import Registry

    ref = parse(args.image)
    if args.artifact_type and not args.referrers:
        raise UsageError("--artifact-type goes with --referrers")
    if args.referrers:
        found = _client().images.referrers(str(ref), artifact_type=args.artifact_type)
        listing = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": found}
        print(json.dumps(listing, indent=4))
        return 0
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
