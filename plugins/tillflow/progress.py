"""Progress of long work, logged every ``interval`` seconds (10 s by default) while it runs. No Airflow import.

A :class:`Progress` counts the items of a piece of work (a shard's account flows) and, per item, the rows
or events done out of a total where the loop knows it. A background ticker logs one line each interval::

    shard 1/2: 3/10 account flow(s) done, 0.2/s; 1,240/5,400 row(s), 41.3/s, ~100 s left; running: cafe_nord 240/900

Worker threads mark which item they run with :meth:`Progress.item`; a loop deep inside the item reports
its rows with the module-level :func:`rows` (a no-op when no progress is active in that thread), so the
loops need not know about the reporter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 10.0


def interval_seconds() -> float:
    """Seconds between two progress lines: ``TILLFLOW_PROGRESS_SECONDS`` or 10."""
    try:
        return max(0.05, float(os.environ.get("TILLFLOW_PROGRESS_SECONDS") or INTERVAL_SECONDS))
    except ValueError:
        return INTERVAL_SECONDS


_active = threading.local()


def _count(n: float) -> str:
    return f"{int(n):,}"


def _rate(n: float) -> str:
    return f"{n:,.1f}"


class Progress:
    """Items done / total and rows done / total with their rates, logged every ``interval`` seconds.

    :param label: what the line starts with (``shard 1/2``)
    :param total: how many items the work has
    :param unit: what an item is (``account flow``)
    :param interval: seconds between two lines
    """

    def __init__(
        self,
        label: str,
        *,
        total: int,
        unit: str = "item",
        interval: float | None = None,
        logger: logging.Logger | logging.LoggerAdapter | Any | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.interval = interval if interval is not None else interval_seconds()
        self.log = logger or log
        self.done = 0
        self.lines = 0
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}  # item → since (monotonic)
        self._rows: dict[str, tuple[int, int, str]] = {}  # item → (done, total, unit)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    # ------------------------------------------------------------------ reporting

    def finish(self, n: int = 1) -> None:
        """``n`` more items are done."""
        with self._lock:
            self.done += n

    def set_rows(self, item: str, done: int, total: int, unit: str = "row") -> None:
        """The rows (or events) ``item`` has done out of ``total``."""
        with self._lock:
            self._rows[item] = (max(0, int(done)), max(0, int(total)), unit)

    @contextmanager
    def item(self, name: str) -> Iterator[None]:
        """Mark ``name`` as running in this thread: :func:`rows` in this thread report to it; it is done after."""
        previous = getattr(_active, "current", None)
        _active.current = (self, name)
        with self._lock:
            self._running[name] = time.monotonic()
        try:
            yield
        finally:
            _active.current = previous
            with self._lock:
                self._running.pop(name, None)
                self.done += 1

    # ------------------------------------------------------------------ the line

    def line(self) -> str:
        now = time.monotonic()
        elapsed = max(now - self._started, 1e-6)
        with self._lock:
            done, running, rows = self.done, dict(self._running), dict(self._rows)
        parts = [
            f"{self.label}: {_count(done)}/{_count(self.total)} {self.unit}(s) done in {elapsed:.0f} s, "
            f"{_rate(done / elapsed)}/s"
        ]
        if rows:
            rows_done = sum(d for d, _, _ in rows.values())
            rows_total = sum(t for _, t, _ in rows.values())
            units = {u for _, _, u in rows.values()}
            unit = units.pop() if len(units) == 1 else "row"
            rate = rows_done / elapsed
            text = f"{_count(rows_done)}/{_count(rows_total)} {unit}(s), {_rate(rate)}/s"
            if rate > 0 and rows_total > rows_done:
                text += f", ~{(rows_total - rows_done) / rate:.0f} s left"
            parts.append(text)
        if running:
            shown = []
            for name, since in sorted(running.items(), key=lambda kv: kv[1])[:5]:
                r = rows.get(name)
                shown.append(f"{name} {r[0]}/{r[1]}" if r else f"{name} {now - since:.0f} s")
            more = f" and {len(running) - 5} more" if len(running) > 5 else ""
            parts.append(f"running: {', '.join(shown)}{more}")
        return "; ".join(parts)

    def tick(self) -> str:
        text = self.line()
        self.log.info("%s", text)
        self.lines += 1
        return text

    # ------------------------------------------------------------------ the ticker

    def start(self) -> Progress:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"progress:{self.label}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # a progress line must never break the work it reports on
                log.exception("progress line failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self.interval))
            self._thread = None

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rows(done: int, total: int, unit: str = "row") -> None:
    """Report the rows (or events) the current thread's item has done; a no-op outside a :meth:`Progress.item`."""
    current = getattr(_active, "current", None)
    if current is not None:
        progress, name = current
        progress.set_rows(name, done, total, unit)
