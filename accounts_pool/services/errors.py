"""Errors a service raises when it refuses; the edges turn them into HTTP answers or messages."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details


class Invalid(ServiceError):
    status = 422
    code = "invalid"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class ProviderRefused(ServiceError):
    """The provider refused what a person gave us (a dead token, a bad code)."""

    status = 422
    code = "provider_refused"
