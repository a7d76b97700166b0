"""Typed errors raised deep down and mapped to HTTP answers and exit codes at the edges."""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Root of hookrelay's own errors. Each kind also derives from the stdlib error it resembles,
    so callers that only know the stdlib (a `ValueError`, a `KeyError`) still catch it."""


class ConfigError(RelayError, ValueError):
    """Invalid configuration; `problems` holds one line per problem, each naming file and key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class ConfigWriteError(RelayError):
    """The API could not change the config. No HTTP here: the api module maps each kind to a
    status; `code` is the error code of the answer."""

    code = "config_write_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigReadOnly(ConfigWriteError, PermissionError):
    code = "config_read_only"


class TenantConflict(ConfigWriteError):
    """The tenant lives in a file the API may not rewrite."""

    code = "tenant_defined_elsewhere"


class TenantNotFound(ConfigWriteError, LookupError):
    code = "tenant_not_found"


class ConfigRejected(ConfigWriteError, ValueError):
    """Valid on its own, but the config set as a whole would be invalid."""

    code = "invalid_config"


class ConfigWriteFailed(ConfigWriteError, OSError):
    code = "config_write_failed"


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
