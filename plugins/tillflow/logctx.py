"""Log lines prefixed with the account they are about.

A shard runs many accounts on threads, and the lines its lower layers write — an HTTP retry, a 429, a token
renewal — name only the vendor. Inside :func:`account_context` every ``tillflow.*`` log record written on that
thread (any module, any logger created later) is prefixed with the account's label, unless its message already
starts with it. A log-record factory does it, so every handler — Airflow's task log, pytest's caplog — sees the
same line. Cheap to import (the plugin manager imports every module under ``plugins/``).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("tillflow_account", default=None)
_lock = threading.Lock()
_installed = False


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            label = _current.get()
            if label and isinstance(record.name, str) and record.name.startswith("tillflow"):
                try:
                    message = record.getMessage()
                except Exception:  # a bad format string: leave it to the handler to report
                    return record
                if not message.startswith(label):
                    record.msg, record.args = f"{label}: {message}", ()
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


@contextmanager
def account_context(label: str) -> Iterator[None]:
    """Prefix the ``tillflow.*`` log lines of this thread (and context) with ``label`` while inside."""
    _install()
    token = _current.set(label)
    try:
        yield
    finally:
        _current.reset(token)
