"""Network commands: network create, ls, inspect, rm, connect, disconnect, prune."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pyrun.cli.output import print_json, table
from pyrun.errors import PyrunError
from pyrun.network import Networks
from pyrun.store import Store


def _networks() -> Networks:
    return Networks(Store())


def cmd_create(args: argparse.Namespace) -> int:
    from pyrun.runtime.spec import parse_labels

    n = _networks().create(
        args.name,
        subnet=args.subnet,
        gateway=args.gateway,
        internal=args.internal,
        labels=parse_labels(args.label),
        driver=args.driver,
    )
    print(n.id)
    return 0


def _pseudo(name: str) -> dict[str, str]:
    import hashlib

    return {"ID": hashlib.sha256(name.encode()).hexdigest(), "Name": name, "Driver": name}


def cmd_ls(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [{"ID": n.id, "Name": n.name, "Driver": "bridge", "Scope": "local",
             "Internal": n.internal, "Subnet": n.subnet} for n in _networks().list()]  # fmt: skip
    rows[1:1] = [{**_pseudo(m), "Scope": "local", "Internal": False, "Subnet": ""}
                 for m in ("host", "none")]  # fmt: skip
    for f in args.filter:
        key, _, value = f.partition("=")
        if key == "name":
            rows = [r for r in rows if value in str(r["Name"])]
        elif key == "id":
            rows = [r for r in rows if str(r["ID"]).startswith(value)]
        elif key == "type":
            custom = value == "custom"
            rows = [r for r in rows if (r["Name"] not in ("bridge", "host", "none")) == custom]
        else:
            raise PyrunError(f"invalid filter {key!r} (name, id, type)")
    if args.quiet:
        for r in rows:
            print(str(r["ID"])[:12] if not args.no_trunc else r["ID"])
    elif args.format == "json":
        for r in rows:
            print(json.dumps(r))
    else:
        table(
            [[str(r["ID"])[:12], r["Name"], r["Driver"], r["Scope"]] for r in rows],
            ["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    nets = _networks()
    out, status = [], 0
    for ref in args.networks:
        try:
            out.append(nets.get(ref).attrs())
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    print_json(out)
    return status


def cmd_rm(args: argparse.Namespace) -> int:
    nets = _networks()
    status = 0
    for ref in args.networks:
        try:
            nets.remove(ref)
            print(ref)
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


def cmd_prune(args: argparse.Namespace) -> int:
    removed = _networks().prune()
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    from pyrun.network.attach import connect
    from pyrun.runtime.containers import get_container

    store = Store()
    connect(
        store, get_container(store, args.container), args.network, aliases=args.alias, ip=args.ip
    )
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    from pyrun.network.attach import disconnect
    from pyrun.runtime.containers import get_container

    store = Store()
    disconnect(store, get_container(store, args.container), args.network)
    return 0
