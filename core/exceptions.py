from typing import Any


class ApplicationError(Exception):
    """A domain rule said no. The API maps it to a 4xx with ``message``."""

    status_code = 400

    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class NotFound(ApplicationError):
    status_code = 404


class Conflict(ApplicationError):
    status_code = 409


class PermissionDenied(ApplicationError):
    status_code = 403
