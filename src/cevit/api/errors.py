"""HTTP errors of the service, answered as JSON by the app's exception handler."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "MIB", "too_large"]

MIB = 1024 * 1024


class ApiError(Exception):
    """An HTTP error answered as JSON: ``{"error", "error_type", "request_id"}`` (or a given body)."""

    def __init__(
        self, status: int, message: str, *, error_type: str = "RequestError", headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body if body is not None else {"error": message, "error_type": error_type}


def too_large(limit: int) -> ApiError:
    """413 for an upload above ``limit`` bytes."""
    return ApiError(413, f"upload too large: the limit is {limit / MIB:g} MB ({limit} bytes)",
                    error_type="MediaTooLargeError")  # fmt: skip
