"""pyrun: build, ship and run OCI containers. The public API is `pyrun.Client`."""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing`: importing typing costs the CLI ~15 ms
__version__ = "0.1.0"
__all__ = ["Client", "__version__", "errors", "from_env"]

if TYPE_CHECKING:
    from typing import Any

    from pyrun.client import Client, from_env


def __getattr__(name: str) -> Any:
    # Lazy: `import pyrun` stays cheap for the CLI's start-up path.
    if name in ("Client", "from_env"):
        from pyrun import client

        return getattr(client, name)
    if name == "errors":
        import pyrun.errors

        return pyrun.errors
    raise AttributeError(f"module 'pyrun' has no attribute {name!r}")
