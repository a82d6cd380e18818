"""Exceptions raised by pyrun's API. Each carries a one-line message a user can act on and the
exit status the CLI gives it (Docker's conventions: 1 for a failed request, 125 for the engine)."""

from __future__ import annotations


class PyrunError(Exception):
    """Base of every error pyrun raises on purpose."""

    exit_code = 1


# docker-py's names: DockerException ⊃ APIError ⊃ NotFound ⊃ ImageNotFound.
DockerException = PyrunError


class APIError(PyrunError):
    """The engine refused or failed a request (docker-py's APIError)."""


class NotFound(APIError):
    """No such image, container, volume, manifest, ..."""


class InvalidReference(PyrunError):
    """An image reference that Docker's grammar does not accept."""


class ImageNotFound(NotFound):
    """No image in the store (or a transport) matches the reference."""


class ImageInUse(PyrunError):
    """An image is used by a container and removal was not forced."""


class InvalidArchive(PyrunError):
    """An archive, layout directory or tar that cannot be read as an image."""


class StoreError(PyrunError):
    """The store is inconsistent or cannot be written."""

    exit_code = 125


class DigestMismatch(PyrunError):
    """Content does not match the digest it was announced with."""
