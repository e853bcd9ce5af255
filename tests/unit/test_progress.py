"""tillflow.progress: a line every interval while work runs, with items and rows done / total and rates."""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tillflow import progress
from tillflow.progress import Progress

LINE = re.compile(
    r"^shard 0: (\d+)/4 account flow\(s\) done in \d+ s, [\d.]+/s; (\d+)/(\d+) row\(s\), ([\d.]+)/s(, ~\d+ s left)?"
)


def test_a_slow_shard_logs_done_total_and_rate_every_interval(caplog):
    caplog.set_level(logging.INFO, logger="tillflow.progress")
    p = Progress("shard 0", total=4, unit="account flow", interval=0.2)

    def work(name: str) -> None:
        with p.item(name):
            for i in range(10):
                progress.rows(i, 10)
                time.sleep(0.05)
            progress.rows(10, 10)

    started = time.monotonic()
    with p, ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(work, ["a", "b", "c", "d"]))
    elapsed = time.monotonic() - started
    lines = [r.getMessage() for r in caplog.records if r.name == "tillflow.progress"]
    assert elapsed > 0.9  # two rounds of two 0.5 s items
    assert len(lines) >= 3, lines  # about one line per 0.2 s while it ran
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    done = [int(m.group(1)) for m in parsed]
    rows_done = [int(m.group(2)) for m in parsed]
    assert done == sorted(done) and rows_done == sorted(rows_done), lines  # it only goes forward
    assert any(float(m.group(4)) > 0 for m in parsed), lines  # a rate once rows are done
    assert any("running: " in line for line in lines), lines
    assert p.done == 4


def test_the_ticker_stops_with_the_work_and_rows_outside_an_item_are_ignored(caplog):
    caplog.set_level(logging.INFO, logger="tillflow.progress")
    progress.rows(5, 10)  # no progress active in this thread: a no-op, no error
    p = Progress("quick", total=1, interval=0.2)
    with p, p.item("x"):
        pass
    assert p.lines == 0  # done before the first interval: no line
    time.sleep(0.5)
    assert p.lines == 0 and not [t for t in threading.enumerate() if t.name.startswith("progress:quick")]


def test_line_reads_rows_of_each_running_item_and_time_left():
    p = Progress("shard 1/2", total=3, unit="account flow", interval=60)
    p._started -= 10  # ten seconds in
    with p.item("cafe_nord revenue"):
        progress.rows(100, 400, "event")
        line = p.line()
    assert line.startswith("shard 1/2: 0/3 account flow(s) done in 10 s, 0.0/s; 100/400 event(s), 10.0/s, ~30 s left")
    assert line.endswith("running: cafe_nord revenue 100/400")
    assert p.line().startswith("shard 1/2: 1/3 account flow(s) done")


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TILLFLOW_PROGRESS_SECONDS", "0.5")
    assert Progress("x", total=1).interval == 0.5
    monkeypatch.setenv("TILLFLOW_PROGRESS_SECONDS", "nonsense")
    assert Progress("x", total=1).interval == 10.0
    monkeypatch.delenv("TILLFLOW_PROGRESS_SECONDS")
    assert Progress("x", total=1).interval == 10.0
