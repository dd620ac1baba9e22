"""The data layer's errors: one family, so a caller catches `MediaDbError` and nothing of the
driver's. Each message is one line and never holds a secret."""


class MediaDbError(Exception):
    """Base of every error the data layer raises on purpose."""


class InvalidInput(MediaDbError, ValueError):
    """Bad input for one field; nothing was written."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(MediaDbError, LookupError):
    """The row the operation needs does not exist."""


class InvalidTransition(MediaDbError, RuntimeError):
    """The row exists but is not in a state that allows the operation."""


class PermissionDenied(MediaDbError, PermissionError):
    """The database refused a statement: the role lacks a privilege (SQLSTATE 42501). The
    message names what was refused and the role."""

    def __init__(self, message: str, role: str) -> None:
        super().__init__(message)
        self.role = role


class DatabaseNotConfigured(MediaDbError, RuntimeError):
    """The environment names no database, or names it in a form we cannot use."""


class DatabaseUnavailable(MediaDbError, RuntimeError):
    """No connection, or the one in use was lost mid-statement: not configured, unreachable,
    refused, restarted, terminated."""


# The exit status of every command of ours (status, verify, adopt, restore, db-check) when the
# database cannot be reached: 1 means the check found something, 2 a usage error.
EXIT_UNAVAILABLE = 3
