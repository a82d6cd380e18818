"""Image references parsed and normalised as Docker does (distribution/reference):
`busybox` -> `docker.io/library/busybox:latest`, registries with ports, tags and digests."""

from __future__ import annotations

import re
from typing import NamedTuple

from pyrun.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_ANCHORED_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class Reference(NamedTuple):
    """A normalised reference: `domain/path[:tag][@digest]`. (A NamedTuple, not a dataclass:
    importing dataclasses costs the CLI's start-up ~10 ms.)"""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def familiar(self) -> str:
        """The short form Docker prints: `busybox:latest`, `localhost:5000/x:1`."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            path = self.path
            if path.startswith(OFFICIAL_REPO_PREFIX) and path.count("/") == 1:
                path = path[len(OFFICIAL_REPO_PREFIX) :]
            name = path
        out = name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid tag format: {tag!r}")
        return Reference(self.domain, self.path, tag, None)


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    if i == -1:
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        first = name[:i]
        if (
            first != "localhost"
            and "." not in first
            and ":" not in first
            and first == first.lower()
        ):
            domain, remainder = DEFAULT_DOMAIN, name
        else:
            domain, remainder = first, name[i + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise `text` as Docker's `ParseNormalizedNamed` + `TagNameOnly` do.

    Raises InvalidReference with Docker's wording for malformed input."""
    if not text:
        raise InvalidReference("invalid reference format: empty reference")
    if _IDENTIFIER_RE.match(text):
        raise InvalidReference(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    m = _REFERENCE_RE.match(text)
    if m is None:
        if _REFERENCE_RE.match(text.lower()):
            raise InvalidReference(
                f"invalid reference format: repository name ({text}) must be lowercase"
            )
        raise InvalidReference(f"invalid reference format: {text!r}")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    domain, path = _split_domain(name)
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            f"invalid reference format: repository name must not be more than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    if not _ANCHORED_DOMAIN_RE.match(domain) or not _ANCHORED_PATH_RE.match(path):
        raise InvalidReference(f"invalid reference format: {text!r}")
    if digest is not None and digest.startswith("sha256:") and not _SHA256_RE.match(digest):
        raise InvalidReference(f"invalid reference format: bad sha256 digest in {text!r}")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_digest(text: str) -> bool:
    return bool(_SHA256_RE.match(text))
