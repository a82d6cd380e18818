"""Volume commands: volume create, ls, inspect, rm, prune."""

from __future__ import annotations

import argparse
import json
import sys

from pyrun.cli.output import print_json, table
from pyrun.errors import PyrunError
from pyrun.store import Store
from pyrun.volumes import Volumes


def _volumes() -> Volumes:
    return Volumes(Store())


def cmd_create(args: argparse.Namespace) -> int:
    from pyrun.runtime.spec import parse_labels

    if args.driver != "local":
        raise PyrunError(f"volume driver {args.driver!r} is not supported (only local)")
    info, _ = _volumes().create(args.name, labels=parse_labels(args.label))
    print(info["Name"])
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    vols = _volumes().list()
    if args.quiet:
        for v in vols:
            print(v["Name"])
    elif args.format == "json":
        for v in vols:
            print(json.dumps(v))
    else:
        table([[v["Driver"], v["Name"]] for v in vols], ["DRIVER", "VOLUME NAME"])
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    vols = _volumes()
    out, status = [], 0
    for name in args.volumes:
        try:
            out.append(vols.get(name))
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    print_json(out)
    return status


def cmd_rm(args: argparse.Namespace) -> int:
    vols = _volumes()
    status = 0
    for name in args.volumes:
        try:
            vols.remove(name, force=args.force)
            print(name)
        except PyrunError as e:
            print(f"Error: {e}", file=sys.stderr)
            status = 1
    return status


def cmd_prune(args: argparse.Namespace) -> int:
    removed = _volumes().prune(all=args.all)
    if removed:
        print("Deleted Volumes:")
        for name in removed:
            print(name)
    return 0
