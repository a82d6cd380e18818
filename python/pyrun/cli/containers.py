"""Container commands: run (foreground), ps, rm, container prune, container inspect."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pyrun.cli.output import human_ago, print_json, table
from pyrun.client import Client
from pyrun.errors import PyrunError
from pyrun.runtime.containers import Container


class UsageError(PyrunError):
    exit_code = 125


def cmd_run(args: argparse.Namespace) -> int:
    if args.detach:
        raise UsageError("detached containers (-d) are not supported yet: run in the foreground")
    if args.tty:
        raise UsageError("a pseudo-TTY (-t) is not supported yet: run without -t")
    client = Client()
    fields = {
        "env": args.env,
        "workdir": args.workdir,
        "user": args.user,
        "group_add": args.group_add,
        "hostname": args.hostname,
        "read_only": args.read_only,
        "privileged": args.privileged,
        "cap_add": args.cap_add,
        "cap_drop": args.cap_drop,
        "security_opt": args.security_opt,
        "ulimits": args.ulimit,
        "network": args.network,
        "entrypoint": None if args.entrypoint is None else [args.entrypoint],
        "memory": args.memory,
        "memory_swap": args.memory_swap,
        "cpus": args.cpus,
        "cpu_shares": args.cpu_shares,
        "cpuset_cpus": args.cpuset_cpus,
        "pids_limit": args.pids_limit,
        "volumes": args.volume,
        "mounts": args.mount,
        "tmpfs": args.tmpfs,
    }
    for path in args.env_file:
        fields["env"] = read_env_file(path) + fields["env"]
    try:
        _c, status = client.containers._run(
            args.image, args.command, remove=args.rm, name=args.name, stdio=None, fields=fields
        )
    except PyrunError as e:
        # Docker's `run` reports engine failures with 125 (or 126/127 from the runtime).
        if e.exit_code == 1:
            e.exit_code = 125
        raise
    return status


def read_env_file(path: str) -> list[str]:
    """Docker's --env-file: KEY=VALUE lines, bare KEY taken from this environment, # comments."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"open {path}: {e.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        key = text.split("=", 1)[0]
        if not key or any(c.isspace() for c in key):
            raise UsageError(
                f"{path}:{n}: invalid environment variable {key!r}: contains whitespace or is empty"
            )
        out.append(text)
    return out


def _status_text(c: Container) -> str:
    status = c.status
    if status == "running":
        return f"Up since {c.attrs.get('started_at', '')[:19]}"
    if status == "exited":
        code = c.attrs.get("exit_code", "?") if c.attrs.get("state") == "exited" else "137"
        return f"Exited ({code}) {human_ago(c.attrs.get('finished_at', ''))}"
    return "Created"


def cmd_ps(args: argparse.Namespace) -> int:
    containers = Client().containers.list(all=args.all)
    if args.quiet:
        for c in containers:
            print(c.id if args.no_trunc else c.id[:12])
        return 0
    rows = []
    for c in containers:
        command = " ".join(c.attrs.get("command") or [])
        if not args.no_trunc and len(command) > 20:
            command = command[:19] + "…"
        rows.append(
            [
                c.id if args.no_trunc else c.id[:12],
                str(c.attrs.get("image_name", "")),
                f'"{command}"',
                human_ago(str(c.attrs.get("created", ""))),
                _status_text(c),
                c.name,
            ]
        )
    table(rows, ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    client = Client()
    status = 0
    for ref in args.containers:
        try:
            client.containers.get(ref).remove(force=args.force)
            print(ref)
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


def cmd_prune(args: argparse.Namespace) -> int:
    res = Client().containers.prune()
    if res["ContainersDeleted"]:
        print("Deleted Containers:")
        for cid in res["ContainersDeleted"]:
            print(cid)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    client = Client()
    out = []
    status = 0
    for ref in args.containers:
        try:
            out.append(container_attrs(client.containers.get(ref)))
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    print_json(out)
    return status


def container_attrs(c: Container) -> dict[str, Any]:
    # OOMKilled is Docker's always-present field; only containers with a cgroup of their own
    # (any resource limit) can be OOM-killed by a limit, so it is false for the others.
    state = {
        "Status": c.status,
        "ExitCode": c.attrs.get("exit_code"),
        "OOMKilled": bool(c.attrs.get("oom_killed")),
    }
    return {**c.attrs, "State": state}
