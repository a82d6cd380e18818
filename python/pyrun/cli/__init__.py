"""The `pyrun` command line: argparse only on the start-up path; each command imports what it
needs when it runs. Errors print one line and exit non-zero (Docker's codes: 125 for usage and
engine errors, 1 for a failed request)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(125, f"pyrun: {message}\nSee '{self.prog} --help'.\n")


def _cmd(module: str, func: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        import importlib

        handler: Handler = getattr(importlib.import_module(f"pyrun.cli.{module}"), func)
        return handler(args)

    return run


def _add_image_commands(sub: Any, *, top_level: bool) -> None:
    """Commands that exist both as `pyrun X` and `pyrun image X` (Docker's aliases)."""
    p = sub.add_parser("import", help="create an image from a rootfs tarball (plain, gzip or zstd)")
    p.add_argument("file", help="tarball path, or - for standard input")
    p.add_argument("repository", nargs="?", help="REPOSITORY[:TAG] to name the image")
    p.add_argument(
        "-c", "--change", action="append", default=[], help="apply a Dockerfile instruction"
    )
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("--platform", help="os/arch[/variant] of the image (default: this host)")
    p.set_defaults(func=_cmd("images", "cmd_import"))

    p = sub.add_parser("save", help="save images to a tar archive (docker-archive or OCI)")
    p.add_argument("images", nargs="+")
    p.add_argument("-o", "--output", help="write to FILE instead of standard output")
    p.add_argument(
        "--format", default="docker-archive", choices=["docker-archive", "oci", "oci-archive"]
    )
    p.set_defaults(func=_cmd("images", "cmd_save"))

    p = sub.add_parser("load", help="load images from a tar archive (docker save, skopeo, OCI)")
    p.add_argument("-i", "--input", help="read FILE instead of standard input")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--platform", help="image to pick from a multi-platform archive")
    p.set_defaults(func=_cmd("images", "cmd_load"))

    p = sub.add_parser("history", help="show the history of an image")
    p.add_argument("image")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format", help="json")
    p.set_defaults(func=_cmd("images", "cmd_history"))

    p = sub.add_parser("tag", help="create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source")
    p.add_argument("target")
    p.set_defaults(func=_cmd("images", "cmd_tag"))

    rm = sub.add_parser(
        "rmi" if top_level else "rm", help="remove images", aliases=[] if top_level else ["remove"]
    )
    rm.add_argument("images", nargs="+")
    rm.add_argument(
        "-f", "--force", action="store_true", help="remove even if in use or multiply tagged"
    )
    rm.set_defaults(func=_cmd("images", "cmd_rmi"))

    ls = sub.add_parser(
        "images" if top_level else "ls", help="list images", aliases=[] if top_level else ["list"]
    )
    ls.add_argument("repository", nargs="?")
    ls.add_argument("-a", "--all", action="store_true")
    ls.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    ls.add_argument("--digests", action="store_true")
    ls.add_argument("--no-trunc", action="store_true")
    ls.add_argument("--format", help="json or table")
    ls.set_defaults(func=_cmd("images", "cmd_images"))


def build_parser() -> argparse.ArgumentParser:
    from pyrun import __version__

    parser = _Parser(prog="pyrun", description="Build, ship and run OCI containers.")
    parser.add_argument("--root", help="store root (default: $PYRUN_ROOT or /var/lib/pyrun)")
    parser.add_argument("--debug", action="store_true", help="print tracebacks for errors")
    parser.add_argument("-v", "--version", action="version", version=f"pyrun version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    _add_image_commands(sub, top_level=True)

    p = sub.add_parser("inspect", help="display detailed information on images")
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--format", help="json (default)")
    p.set_defaults(func=_cmd("images", "cmd_inspect"))

    image = sub.add_parser("image", help="manage images")
    isub = image.add_subparsers(
        dest="image_command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    _add_image_commands(isub, top_level=False)
    p = isub.add_parser("inspect", help="display detailed information on images")
    p.add_argument("images", nargs="+")
    p.add_argument("-f", "--format", help="json (default)")
    p.set_defaults(func=_cmd("images", "cmd_inspect"))
    p = isub.add_parser("prune", help="remove dangling images (all unused with -a)")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt (pyrun never prompts)")
    p.set_defaults(func=_cmd("images", "cmd_prune"))
    p = isub.add_parser(
        "copy",
        help="copy an image between transports (oci:, oci-archive:, docker-archive:, rootfs:, the store)",
    )
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--platform")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd("images", "cmd_copy"))

    system = sub.add_parser("system", help="manage pyrun")
    ssub = system.add_subparsers(
        dest="system_command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    p = ssub.add_parser("check", help="verify every blob against its digest and every reference")
    p.set_defaults(func=_cmd("system", "cmd_check"))
    p = ssub.add_parser("prune", help="remove unused data")
    p.add_argument(
        "-a", "--all", action="store_true", help="remove all unused images, not just dangling ones"
    )
    p.add_argument("-f", "--force", action="store_true", help="do not prompt (pyrun never prompts)")
    p.set_defaults(func=_cmd("system", "cmd_prune"))
    p = ssub.add_parser("df", help="show disk usage")
    p.set_defaults(func=_cmd("system", "cmd_df"))

    p = sub.add_parser("version", help="show the version")
    p.set_defaults(func=lambda a: print(f"pyrun version {__version__}") or 0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.root:
        os.environ["PYRUN_ROOT"] = args.root
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # one clear line; the traceback only with --debug
        if args.debug:
            raise
        from pyrun.errors import PyrunError

        if isinstance(e, PyrunError):
            print(f"Error: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, OSError):
            where = f": {e.filename}" if e.filename else ""
            print(f"Error: {e.strerror or e}{where}", file=sys.stderr)
            return 1
        print(
            f"Error: internal error: {type(e).__name__}: {e} (run with --debug for details)",
            file=sys.stderr,
        )
        return 125


if __name__ == "__main__":
    sys.exit(main())
