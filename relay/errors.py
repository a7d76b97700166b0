"""Typed errors raised deep down and mapped to HTTP answers and exit codes at the edges."""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Root of hookrelay's own errors."""


class ApiError(RelayError):
    """An HTTP API error answer: `{"error": {"code", "message", "details"}}`."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}


class StartupError(RelayError):
    """A problem that keeps the daemon from starting: exit status 2, one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
