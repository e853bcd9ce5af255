"""Errors shared by clients, store and operators. Messages never carry a secret."""


class TillflowError(Exception):
    """Base of every error tillflow raises on purpose."""


class ConfigError(TillflowError, ValueError):
    """A bad spec, account setting or CLI input. The message names the field."""


class AuthError(TillflowError):
    """Credentials were refused. Never retried: one clear error, no retry storm."""


class TransientError(TillflowError):
    """A remote call still failed after the retry policy gave up (429/5xx/timeouts)."""


class RemoteError(TillflowError):
    """A remote call failed with a non-retryable answer (4xx other than 401/403/409/429)."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class NeedsMapping(TillflowError):
    """Source keys with data have no mapping and are not marked inactive."""

    def __init__(self, kind: str, keys: list[str]):
        self.kind = kind
        self.keys = sorted(keys)
        super().__init__(f"unmapped {kind}(s): {', '.join(self.keys)} — map them or mark them inactive")
