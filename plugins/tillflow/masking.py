"""Keep secrets out of messages: a one-line, masked summary of an error (no Airflow import)."""

from __future__ import annotations

import re

_PATTERNS = [
    re.compile(
        r"(?i)\b(password|passwd|secret|token|refresh_token|access_token|apikey|api_key|key|ident)=([^&\s\"']+)"
    ),
    re.compile(r"(?i)(\"(?:password|secret|token|refresh_token|access_token|apikey|api_key)\"\s*:\s*\")([^\"]*)"),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]+)"),
    re.compile(r"(?i)(://[^:/@\s]+:)([^@\s]+)(@)"),
]


def scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    for pat in _PATTERNS:
        text = pat.sub(
            lambda m: (
                m.group(1)
                + ("=***" if m.group(0)[len(m.group(1))] == "=" else "***")
                + (m.group(3) if m.re.groups >= 3 else "")
            ),
            text,
        )
    return text


def one_line(exc: BaseException | str, secrets: list[str] | tuple[str, ...] = (), limit: int = 300) -> str:
    """``ErrorClass: first line`` of an exception, masked and cut to ``limit`` characters."""
    if isinstance(exc, BaseException):
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    else:
        text = (exc.strip().splitlines() or [""])[0]
    text = scrub(text, secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"
