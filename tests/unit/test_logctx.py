"""Log lines of a shard's threads name the account they are about, whichever tillflow module wrote them."""

from __future__ import annotations

import logging
import threading

from tillflow.logctx import account_context


def test_lines_of_lower_layers_are_prefixed_with_the_account_of_their_thread(caplog):
    http = logging.getLogger("tillflow.http")
    later = logging.getLogger("tillflow.sources.made_after_the_context_was_installed")
    other = logging.getLogger("somebody.else")
    seen = threading.Barrier(2)

    def account(label: str) -> None:
        with account_context(label):
            seen.wait()  # both threads inside their own context at once
            http.warning("planday: HTTP %d, retrying in %.1f s", 503, 0.5)
            later.info("token renewed")
            http.info("%s: done", label)  # already names it: not doubled
            other.info("not ours")
        http.info("after the context")

    with caplog.at_level(logging.INFO):
        threads = [threading.Thread(target=account, args=(f"Cafe {n} (cafe_{n}) 2026-11-17",)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = sorted(r.getMessage() for r in caplog.records)
    for n in ("a", "b"):
        label = f"Cafe {n} (cafe_{n}) 2026-11-17"
        assert f"{label}: planday: HTTP 503, retrying in 0.5 s" in lines
        assert f"{label}: token renewed" in lines
        assert f"{label}: done" in lines
    assert lines.count("not ours") == 2 and lines.count("after the context") == 2
