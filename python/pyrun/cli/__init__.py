"""The `pyrun` command line. Errors print one line and exit non-zero (Docker's codes: 125 for
usage and engine errors, 1 for a failed request).

Start-up matters here: a `run` line is read by cli/options.py without importing argparse;
every other line (and any `run` line that module leaves to argparse) by the parser of
cli/parser.py. Each command imports what it needs when it runs."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # the start-up path avoids importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


# Set by the `pyrun` executable (rust/bin/pyrun.rs) on the lines it hands over, to the line's
# template key where it may have one (`run`: runtime/template.py; `build`: build/template.py).
# Removed before anything else reads the environment.
LAUNCHER_ENV = "PYRUN_NATIVE_LAUNCHER"  # fastrun::LAUNCHER_ENV


class _Args:
    """argparse.Namespace's shape, for the lines cli/options.py parses."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)


def _parse(argv: list[str], template_key: str = "") -> Any:
    """The arguments: from cli/options.py when it reads the line, else from argparse (which
    exits with 125 and its message on a usage error); None when no command is given.
    `template_key`: the key under which to write the line's template, if it gets one."""
    from pyrun.cli.options import scan

    fields = scan(argv)
    if fields is not None:
        import importlib

        handler = fields.pop("handler")
        module = importlib.import_module("pyrun.cli.containers")
        fields["func"] = getattr(module, str(handler))
        fields["line_template"] = (template_key, argv) if template_key else None
        return _Args(fields)
    from pyrun.cli.parser import COMMANDS, _command_word, build_parser

    word = _command_word(argv)
    parser = build_parser(word if word in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return None
    args.line_template = (template_key, argv) if template_key else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv, os.environ.pop(LAUNCHER_ENV, ""))
    if args is None:
        return 0
    if args.root:
        os.environ["PYRUN_ROOT"] = args.root
    if args.insecure_registry:
        extra = os.environ.get("PYRUN_INSECURE_REGISTRIES", "")
        os.environ["PYRUN_INSECURE_REGISTRIES"] = ",".join([extra, *args.insecure_registry])
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
