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

    @property
    def permanent(self) -> bool:
        """A client error the same request would get again (4xx other than 408, 409, 429): never retried."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in (408, 409, 429)


class DeliveryRefused(TillflowError):
    """The target refused some rows (recorded failed with its message); the others were delivered.
    Permanent: a retry would send the same refused rows again."""

    def __init__(self, message: str, *, refused: list[str]):
        super().__init__(message)
        self.refused = list(refused)


def is_permanent(exc: BaseException) -> bool:
    """Whether a retry cannot help: refused credentials, bad settings, a refused request or row."""
    if isinstance(exc, AuthError | ConfigError | DeliveryRefused | NeedsMapping):
        return True
    return isinstance(exc, RemoteError) and exc.permanent


class NeedsMapping(TillflowError):
    """Source keys with data have no mapping and are not marked inactive."""

    def __init__(self, kind: str, keys: list[str]):
        self.kind = kind
        self.keys = sorted(keys)
        super().__init__(f"unmapped {kind}(s): {', '.join(self.keys)} — map them or mark them inactive")
