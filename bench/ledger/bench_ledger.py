"""Post a fiscal year of a busy Kash.click shop to the Pennylane stand-in at Pennylane's real rate limit.

    .venv/bin/python bench/ledger/bench_ledger.py [--orders-per-day 25] [--days 365] [--out bench/results/…]

The history import of one account (``kashclick_to_pennylane_history``: due five minutes after activation,
window from the fiscal-year start through yesterday) runs through the platform's own steps in this
process (plan → shard → fetch every day → map with the posting rules → queue in the outbox → post), with
the stand-ins in threads. The Pennylane stand-in enforces 25 requests per 5 s per token (sliding window),
as Pennylane documents; the client paces itself below it.

Reports: events posted, wall time per phase, requests per second while posting and their share of the
limit (target ≥ 90 %), 429s received, duplicate piece numbers (target 0), unbalanced entries (target 0),
and the trial balance against the POS totals. Exit 0: every target met; 1: one missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "include"), str(ROOT / "bench" / "scale")]

LIMIT_PER_SECOND = 25 / 5


def _lines(entry: dict) -> list[dict]:
    return entry.get("ledger_entry_lines") or entry.get("lines") or []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders-per-day", type=int, default=25)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import psycopg
    import requests
    import sandbox.server as sandbox_server
    from bench_scale import create_db, server_label, server_url
    from sandbox.server import Sandbox

    sandbox_server.LOG_SIZE = 200_000  # keep every call in the request log, to count them

    server = server_url()
    label, version = server_label(server)
    db = f"tillflow_bench_ledger_{uuid.uuid4().hex[:6]}"
    url = create_db(server, db)
    os.environ["TILLFLOW_DATABASE_URL"] = url
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    logging.getLogger("tillflow.http").setLevel(logging.WARNING)

    from tillflow.sources.base import ConnectionInfo
    from tillflow.specs import load_spec, parse_settings
    from tillflow.store import Store, ensure_schema
    from tillflow.sync import RunParams, plan_run, run_shard

    spec = load_spec(ROOT / "dags" / "kashclick_to_pennylane.yaml")
    sb = Sandbox().start()
    lines: list[str] = []
    try:
        ensure_schema(url)
        key = "busyshop"
        today = date.today()
        fy_start = today - timedelta(days=args.days)
        requests.post(
            f"{sb.kashclick_url}/_sandbox/shops/{key}", json={"orders_per_day": args.orders_per_day}, timeout=10
        ).raise_for_status()
        activated = datetime.now(UTC) - timedelta(minutes=6)
        settings = {
            "timezone": "Europe/Paris",
            "lookback_days": 1,
            "activated_at": activated.isoformat(),
            "flows": {"ledger": {"fiscal_year_start": fy_start.isoformat()}},
        }
        with Store.open(url) as store:
            account = store.upsert_account(
                spec.integration,
                key,
                name="Busy shop",
                conn_id="k",
                target_conn_id="p",
                settings=parse_settings(settings, spec=spec),
            )
            conns = {
                "k": ConnectionInfo(conn_id="k", host=sb.kashclick_url, login=key, password=f"pw-{key}"),
                "p": ConnectionInfo(
                    conn_id="p",
                    host=f"{sb.pennylane_url}/api/external/v2",
                    login="bench-app",
                    password=f"prt-{key}",
                    extra={"client_secret": "cs-bench"},
                ),
            }
            t0 = time.monotonic()
            planned = plan_run(
                store,
                spec,
                [spec.flow("history")],
                dag_id="kashclick_to_pennylane_history",
                run_id="bench",
                logical_date=datetime.now(UTC),
                params=RunParams(),
                manual=False,
            )
            [item] = planned.items
            started = datetime.now(UTC)
            outcomes = []
            attempts = 0
            for _ in range(3):  # a lost answer or a transient failure: the task's retry runs it again
                attempts += 1
                for shard in planned.shards:
                    outcomes = run_shard(
                        spec,
                        dag_id="kashclick_to_pennylane_history",
                        run_id="bench",
                        shard=shard["shard"],
                        conns=conns.__getitem__,
                    ).outcomes
                if all(o.status == "success" for o in outcomes):
                    break
            wall = time.monotonic() - t0
            activity = store.activity(run_id="bench")[0]
            outbox = Counter(
                r["state"]
                for r in store.conn.execute(
                    "SELECT state FROM tillflow.outbox WHERE account_id = %s", (account.id,)
                ).fetchall()
            )
            store.conn.commit()
        log = requests.get(f"{sb.pennylane_url}/_sandbox/requests", timeout=30).json()
        api = [r for r in log if r["path"].startswith("/api/") and r["ts"] >= started.timestamp()]
        posts = [r for r in api if r["method"] == "POST" and r["path"].endswith("/ledger_entries")]
        t_first, t_last = min(r["ts"] for r in api), max(r["ts"] for r in api)
        rate = len(api) / max(t_last - t_first, 1e-6)
        share = rate / LIMIT_PER_SECOND
        throttled = sum(r["status"] == 429 for r in api)
        company = requests.get(f"{sb.pennylane_url}/_sandbox/companies/{key}", timeout=60).json()["company"]
        entries = company["entries"]
        pieces = Counter(e["piece_number"] for e in entries)
        duplicates = sum(n - 1 for n in pieces.values() if n > 1)
        unbalanced = sum(
            sum(Decimal(x["debit"]) for x in _lines(e)) != sum(Decimal(x["credit"]) for x in _lines(e)) for e in entries
        )
        balance = requests.get(f"{sb.pennylane_url}/_sandbox/companies/{key}/trial_balance", timeout=60).json()
        sales_vat = sum(
            Decimal(a["credit"]) - Decimal(a["debit"])
            for n, a in balance["accounts"].items()
            if n.startswith(("70", "4457"))
        )
        pos_total = Decimal(0)
        for i in range((item.window_end - item.window_start).days + 1):
            day = item.window_start + timedelta(days=i)
            pos = requests.get(f"{sb.kashclick_url}/_sandbox/shops/{key}/day/{day}", timeout=30).json()
            pos_total += sum(Decimal(o["totalIncl"]) for o in pos["orders"] if o["status"] == "validated")
        lines += [
            f"tillflow bench/ledger — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"command:  .venv/bin/python bench/ledger/bench_ledger.py --orders-per-day {args.orders_per_day} "
            f"--days {args.days}",
            f"server:   {version}",
            f"machine:  nproc={os.cpu_count()}, CPython {platform.python_version()}, {platform.platform()}",
            f"flow:     kashclick_to_pennylane_history, window {item.window_start}..{item.window_end} "
            f"({(item.window_end - item.window_start).days + 1} business days), {args.orders_per_day} orders/day",
            "limit:    Pennylane stand-in: 25 requests per 5 s per token (sliding window), as documented",
            "",
            f"result:   {[o.status for o in outcomes]} after {attempts} attempt(s); activity: fetched "
            f"{activity['fetched']}, queued {activity['upserted']}, delivered {activity['delivered']}, "
            f"rejected {activity['rejected']}",
            f"outbox:   {dict(outbox)}",
            f"entries:  {len(entries)} in Pennylane ({len(posts)} POST /ledger_entries)",
            f"wall:     {wall:.0f} s in total",
            f"requests: {len(api)} to the API in {t_last - t_first:.0f} s = {rate:.2f}/s = {share:.1%} of the "
            f"limit (5.00/s); 429 received: {throttled}",
            f"books:    sales + VAT credits {sales_vat} vs POS order totals {pos_total}"
            f" ({'equal' if sales_vat == pos_total else 'DIFFERENT'})",
            "",
            "targets:",
            f"  {'PASS' if len(entries) >= 20000 else 'FAIL'}  ≥ 20,000 events posted ({len(entries)})",
            f"  {'PASS' if share >= 0.9 else 'FAIL'}  ≥ 90 % of the rate limit ({share:.1%})",
            f"  {'PASS' if duplicates == 0 else 'FAIL'}  duplicates 0 ({duplicates})",
            f"  {'PASS' if unbalanced == 0 else 'FAIL'}  unbalanced entries 0 ({unbalanced})",
        ]
        ok = len(entries) >= 20000 and share >= 0.9 and duplicates == 0 and unbalanced == 0
    finally:
        sb.stop()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    text = "\n".join(lines) + "\n"
    out = Path(args.out or ROOT / "bench" / "results" / f"ledger_{date.today()}_{label}.txt")
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
