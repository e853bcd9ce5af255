"""Keep secrets out of messages: a one-line, masked summary of an error (no Airflow import).

The masking rules themselves are :func:`tillflow.http.mask` (one place for them).
"""

from __future__ import annotations

from collections.abc import Iterable

from tillflow.http import mask


def one_line(exc: BaseException | str, secrets: Iterable[str] = (), limit: int = 300) -> str:
    """``ErrorClass: first line`` of an exception (or the first line of a text), masked and cut to ``limit``."""
    if isinstance(exc, BaseException):
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    else:
        text = (exc.strip().splitlines() or [""])[0]
    text = mask(text, list(secrets))
    return text if len(text) <= limit else text[: limit - 1] + "…"
