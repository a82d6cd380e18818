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
    if res.get("BuildCacheDeleted"):
        print(f"Deleted build cache objects: {res['BuildCacheDeleted']}")
    print(f"Total reclaimed space: {human_size(res['SpaceReclaimed'])}")
    return 0


def _reclaimable(part: int, whole: int) -> str:
    return f"{human_size(part)} ({round(100 * part / whole) if whole else 0}%)"


def cmd_df(args: argparse.Namespace) -> int:
    """Docker's `system df`: images, containers, local volumes and build cache, each with how
    many are in use and how much space removing the rest would give back."""
    df = Client().system.df()
    imgs, ctrs, vols, cache = df["Images"], df["Containers"], df["Volumes"], df["BuildCache"]
    img_size = df["LayersSize"] + df["BlobsSize"]
    img_free = min(img_size, sum(i["Size"] - i["SharedSize"] for i in imgs if not i["Containers"]))
    ctr_size = sum(c["SizeRw"] for c in ctrs)
    live = ("running", "restarting", "paused")  # what `container prune` leaves
    ctr_free = sum(c["SizeRw"] for c in ctrs if c["State"] not in live)
    vol_size = sum(v["UsageData"]["Size"] for v in vols)
    vol_free = sum(v["UsageData"]["Size"] for v in vols if not v["UsageData"]["RefCount"])
    cache_n = sum(c["Count"] for c in cache)
    cache_size = sum(c["Size"] for c in cache)
    rows = [
        ["Images", len(imgs), sum(1 for i in imgs if i["Containers"]), img_size, img_free],
        ["Containers", len(ctrs), sum(1 for c in ctrs if c["State"] in live), ctr_size, ctr_free],
        ["Local Volumes", len(vols), sum(1 for v in vols if v["UsageData"]["RefCount"]),
         vol_size, vol_free],
        ["Build Cache", cache_n, 0, cache_size, cache_size],
    ]  # fmt: skip
    table(
        [
            [t, str(n), str(a), human_size(size), _reclaimable(free, size)]
            for t, n, a, size, free in rows
        ],
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
    )
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from pyrun import __version__

    print(f"pyrun version {__version__}")
    return 0
