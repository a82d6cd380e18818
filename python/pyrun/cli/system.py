"""System commands: check, prune, df."""

from __future__ import annotations

import argparse
import sys

from pyrun.cli.output import human_size, table
from pyrun.client import Client


def cmd_check(args: argparse.Namespace) -> int:
    problems = Client().system.check()
    for p in problems:
        print(p)
    if problems:
        print(f"Error: store check found {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("store is consistent")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    res = Client().system.prune(all=args.all)
    if res["ContainersDeleted"]:
        print("Deleted Containers:")
        for cid in res["ContainersDeleted"]:
            print(cid)
    if res.get("NetworksDeleted"):
        print("Deleted Networks:")
        for name in res["NetworksDeleted"]:
            print(name)
    for d in res["ImagesDeleted"]:
        print(f"deleted: {d['Deleted']}")
    print(f"Total reclaimed space: {human_size(res['SpaceReclaimed'])}")
    return 0


def cmd_df(args: argparse.Namespace) -> int:
    client = Client()
    usage = client.system.df()
    n = len(client.store.images())
    table(
        [["Images", str(n), human_size(usage["blobs"]), human_size(usage["layers"])]],
        ["TYPE", "TOTAL", "BLOBS", "UNPACKED"],
    )
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from pyrun import __version__

    print(f"pyrun version {__version__}")
    return 0
