"""Make Airflow's secrets masker linear in the number of secrets (a workaround for Airflow 3.3).

Airflow 3.3's ``SecretsMasker.add_mask`` rebuilds one regular expression of *every* secret it has seen
each time a new secret arrives: ``re.compile("|".join(self.patterns))``. Adding n secrets therefore costs
O(n²) — measured here: 250 secrets 1.7 s, 500 secrets 7.9 s, 1,000 secrets 34 s of CPU in one process.
tillflow reads two connections per account, so the Airflow API server (which masks every connection it
serves to a task) spent 353 CPU-seconds of a 2,000-account cycle compiling regexes, and every shard's
task process did the same for its own accounts (``bench/results/``).

:func:`install` swaps the single alternation for :class:`ChunkedReplacer`: secrets go into chunks of at
most :data:`CHUNK` patterns; only the open chunk is recompiled after an add (lazily, at the next
use), and ``sub`` runs the chunks one
after the other. What is masked does not change (every pattern still replaces to the same text; running
the chunks in turn can only mask more, never less). It is installed from the tillflow plugin, which
Airflow imports in the API server and in every task process before any connection is read.

The patched ``add_mask`` repeats the upstream body with one line changed, so it is only installed on the
exact upstream code it was written against (:data:`UPSTREAM_SHA256`); on any other version it logs a
warning and leaves Airflow alone (``tests/unit/test_airflow_masker.py`` fails then, as a reminder).
"""

from __future__ import annotations

import collections.abc
import hashlib
import inspect
import logging
import re
import textwrap
import threading

log = logging.getLogger(__name__)

#: patterns per compiled chunk: an add recompiles at most this many; a ``sub`` runs n / CHUNK regexes
CHUNK = 64

#: sha256 of ``inspect.getsource(SecretsMasker.add_mask)`` in apache-airflow 3.3.2 (both copies)
UPSTREAM_SHA256 = "3e1080d1cae7e06fa3b5e0cee32676cbc353f4be1ce614d91ee7712219f1a5e8"

_MODULES = ("airflow._shared.secrets_masker.secrets_masker", "airflow.sdk._shared.secrets_masker.secrets_masker")


class ChunkedReplacer:
    """Stands in for the masker's compiled ``replacer``: ``sub(repl, text)`` over chunks of patterns."""

    def __init__(self, patterns: collections.abc.Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._sealed: list[re.Pattern[str]] = []
        self._open: list[str] = []
        self._open_rx: re.Pattern[str] | None = None
        self._count = 0
        for p in patterns:
            self.add(p)

    def add(self, pattern: str) -> None:
        with self._lock:
            self._open.append(pattern)
            self._count += 1
            self._open_rx = None  # compiled on the next use, so a burst of adds compiles once
            if len(self._open) >= CHUNK:
                rx = re.compile("|".join(self._open))
                self._sealed = [*self._sealed, rx]  # readers iterate a list that is never mutated
                self._open = []

    def _regexes(self) -> list[re.Pattern[str]]:
        with self._lock:
            if self._open and self._open_rx is None:
                self._open_rx = re.compile("|".join(self._open))
            return [*self._sealed, self._open_rx] if self._open else list(self._sealed)

    def sub(self, repl, string: str, count: int = 0) -> str:
        for rx in self._regexes():
            string = rx.sub(repl, string, count)
        return string

    def search(self, string: str):
        for rx in self._regexes():
            m = rx.search(string)
            if m:
                return m
        return None

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0


def _add_mask(self, secret, name: str | None = None):
    """Upstream ``SecretsMasker.add_mask`` (3.3.2) with the full recompile replaced by a chunk add."""
    if isinstance(secret, dict):
        for k, v in secret.items():
            self.add_mask(v, k)
    elif isinstance(secret, str):
        if not secret:
            return
        skip = _skip_set(self)
        if secret.lower() in skip:
            return
        min_length = self.min_length_to_mask
        if len(secret) < min_length:
            cls = type(self)
            if not cls._has_warned_short_secret:
                log.warning(
                    "Skipping masking for a secret as it's too short (<%d chars)",
                    min_length,
                    extra={self.ALREADY_FILTERED_FLAG: True},
                )
                cls._has_warned_short_secret = True
            return
        for s in self._adaptations(secret):
            if not s or len(s) < min_length or s.lower() in skip:
                continue
            pattern = re.escape(s)
            if pattern not in self.patterns and (not name or self.should_hide_value_for_key(name)):
                self.patterns.add(pattern)
                if not isinstance(self.replacer, ChunkedReplacer):
                    # first add (or after reset_masker): start from every pattern already known
                    self.replacer = ChunkedReplacer(self.patterns)
                else:
                    self.replacer.add(pattern)
    elif isinstance(secret, collections.abc.Iterable):
        for v in secret:
            self.add_mask(v, name)


def _skip_set(masker) -> collections.abc.Container[str]:
    module = inspect.getmodule(type(masker))
    return getattr(module, "SECRETS_TO_SKIP_MASKING", ())


def upstream_digest(cls) -> str:
    """sha256 of the upstream ``add_mask`` source (as found before :func:`install`)."""
    fn = getattr(cls, "_tillflow_upstream_add_mask", cls.add_mask)
    return hashlib.sha256(textwrap.dedent(inspect.getsource(fn)).encode()).hexdigest()


def install() -> list[str]:
    """Patch every importable copy of Airflow's SecretsMasker; returns the modules patched. Idempotent."""
    import importlib

    patched: list[str] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = module.SecretsMasker
        if getattr(cls, "_tillflow_upstream_add_mask", None) is not None:
            patched.append(name)
            continue
        try:
            digest = upstream_digest(cls)
        except (OSError, TypeError):  # no source (zipped install): leave it
            digest = ""
        if digest != UPSTREAM_SHA256:
            log.warning("tillflow: %s.SecretsMasker.add_mask is not the 3.3.2 code; masker left as is", name)
            continue
        cls._tillflow_upstream_add_mask = cls.add_mask
        cls.add_mask = _add_mask
        patched.append(name)
    return patched
