#!/usr/bin/env python
"""Benchmark: upsert canonical revenue rows through the store path, beside bare COPY and
``PostgresHook.insert_rows(replace=True)``, on the same data in the same run.

Target (the issue): the store path (``Store.upsert_revenue_many``, COPY → staging → merge) reaches
at least 0.6× the rate of a bare ``COPY … FROM STDIN`` into an empty table, and at least 4× the
rate of ``PostgresHook.insert_rows(replace=True)``.

Usage::

    python bench/bench_upsert.py [--rows 1000000] [--insert-rows-rows N] [--repeat 3] [--no-fail]

The database server is ``TILLFLOW_DATABASE_URL`` if set, else the project's default
(``tillflow.store.db.database_url()``: the embedded pgserver under ``.tillflow/``). On that server the
benchmark drops and recreates a throwaway database (``tillflow_bench`` by default) and touches
nothing else. It prints a table and writes it to ``bench/results/upsert_<date>_<server>.txt``.
Exit status 1 if a target is missed (unless ``--no-fail``), 2 if a sanity check fails.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "plugins") not in sys.path:  # `python bench/bench_upsert.py` works without PYTHONPATH
    sys.path.insert(0, str(ROOT / "plugins"))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

COLUMNS = ["account_id", "target_key", "business_date", "hour", "amount"]
PK = ["account_id", "target_key", "business_date", "hour"]
COPY_TABLE = "bench.revenue_copy"
COPY_FK_TABLE = "bench.revenue_copy_fk"
INSERT_ROWS_TABLE = "bench.revenue_insert_rows"
INSERT_ROWS_FK_TABLE = "bench.revenue_insert_rows_fk"
INSERT_ROWS_METHOD = "PostgresHook.insert_rows(replace=True)"
CONN_ID = "bench_pg"
INFO_COPY_FK = "  info: bare COPY, table with an FK"
INFO_INSERT_ROWS_FK = "  info: insert_rows, table with an FK"
STORE_TARGET = 0.6  # store rate ≥ 0.6 × bare COPY rate
INSERT_ROWS_TARGET = 4.0  # store rate ≥ 4 × insert_rows rate


@dataclass
class Result:
    method: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


# --------------------------------------------------------------------------- setup


def mask(url: str) -> str:
    """A URL or conninfo without its password."""
    return re.sub(r"(password=)\S+", r"\1***", re.sub(r"(://[^:/@]*:)[^@]+@", r"\1***@", url))


def base_url() -> tuple[str, bool]:
    """The server to benchmark and whether it is the embedded default."""
    url = os.environ.get("TILLFLOW_DATABASE_URL")
    if url:
        return url, False
    from tillflow.store.db import database_url  # noqa: PLC0415 - starts the embedded server if needed

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver
    return database_url(), True


def recreate_database(url: str, name: str) -> str:
    """Drop and recreate the throwaway database ``name``; return a conninfo pointing at it."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT current_database()").fetchone()[0] == name:
            raise SystemExit(f"refusing: the server URL already points at {name!r}; point it at another database")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(url, dbname=name)


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def airflow_connection_json(conninfo: str) -> str:
    """The ``AIRFLOW_CONN_…`` JSON form of a libpq conninfo; works for TCP and unix-socket hosts alike."""
    params = conninfo_to_dict(conninfo)
    conn: dict[str, object] = {
        "conn_type": "postgres",
        "host": params.pop("host", None),
        "login": params.pop("user", None),
        "password": params.pop("password", None),
        "schema": params.pop("dbname", None),
    }
    port = params.pop("port", None)
    if port:
        conn["port"] = int(port)
    if params:  # sslmode, options, …: the hook passes extras through to psycopg
        conn["extra"] = {k: str(v) for k, v in params.items()}
    return json.dumps({k: v for k, v in conn.items() if v not in (None, "")})


def make_rows(n: int, account_id: int, keys: int) -> list[tuple[int, str, date, int, Decimal]]:
    """``n`` deterministic canonical daily revenue rows: ``keys`` target keys × consecutive days.

    Rows come key-major (sorted by the primary key), like a real import of a long history.
    ``hour`` is -1 (the whole day), which is what the store writes for ``None``.
    """
    days = -(-n // keys)
    start = date(2000, 1, 1)
    dates = [start + timedelta(days=d) for d in range(days)]
    names = [f"unit-{k:03d}" for k in range(keys)]
    rows = []
    for i in range(n):
        k, d = divmod(i, days)
        cents = (i * 2_654_435_761) % 10_000_000  # 0.00 … 99,999.99, spread deterministically
        rows.append((account_id, names[k], dates[d], -1, Decimal(cents).scaleb(-2)))
    return rows


def changed_rows(rows: list[tuple], every: int = 10) -> list[tuple]:
    """A copy with every ``every``-th amount changed (+1.00): 10 % changed by default."""
    return [r if i % every else (*r[:4], r[4] + Decimal("1.00")) for i, r in enumerate(rows)]


def checkpoint(conn: psycopg.Connection) -> None:
    """Flush dirty buffers so one method's writes are not paid for by the next one."""
    try:
        conn.execute("CHECKPOINT")
    except psycopg.Error:  # not superuser / no pg_checkpoint: timings just get noisier
        conn.rollback()


# --------------------------------------------------------------------------- the three methods


def timed_copy(url: str, table: str, rows: list[tuple]) -> float:
    """One bare COPY of ``rows`` into the empty ``table``, in one transaction; returns seconds."""
    with psycopg.connect(url) as conn:
        conn.execute(f"TRUNCATE {table}")
        conn.commit()
        checkpoint(conn)
        conn.commit()
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


def median_of(times: list[float]) -> tuple[float, str]:
    """The median of repeated timings and a note giving the spread (empty for a single run)."""
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    spread = f"median of {len(times)} runs ({ordered[0]:.2f}-{ordered[-1]:.2f}s); " if len(times) > 1 else ""
    return median, spread


def run_bare_copy(url: str, table: str, rows: list[tuple], repeat: int, method: str, note: str) -> Result:
    seconds, spread = median_of([timed_copy(url, table, rows) for _ in range(repeat)])
    return Result(method, len(rows), seconds, spread + note)


def run_store(store, rows: list[tuple], label: str, run_id: str, expect: dict[str, int], repeat: int = 1) -> Result:
    """Time ``store.upsert_revenue_many(rows, mode="overwrite")``; with ``repeat`` > 1 the revenue table is
    emptied before each run (only for the first pass, whose expected result is all inserts)."""
    times = []
    for _ in range(repeat):
        if repeat > 1:
            with store.conn.transaction():
                store.conn.execute("TRUNCATE tillflow.revenue")
        checkpoint(store.conn)
        store.conn.commit()
        started = time.perf_counter()
        res = store.upsert_revenue_many(rows, mode="overwrite", run_id=run_id)
        times.append(time.perf_counter() - started)
        got = {"inserted": res.inserted, "updated": res.updated, "unchanged": res.unchanged, "kept": res.kept}
        if got != expect:
            raise SanityError(f"{label}: upsert_revenue_many returned {got}, expected {expect}")
    seconds, spread = median_of(times)
    note = f"{spread}inserted {res.inserted:,} updated {res.updated:,} unchanged {res.unchanged:,}"
    return Result(label, len(rows), seconds, note)


def run_insert_rows(url: str, table: str, rows: list[tuple], commit_every: int, method: str, note: str = "") -> Result:
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = airflow_connection_json(url)
    if not os.environ.get("AIRFLOW_HOME"):  # don't leave an ~/airflow behind
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="tillflow-bench-airflow-")
        atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
    # quiet the hook's "Loaded N rows … so far" line per chunk (Airflow configures structlog from this)
    os.environ.setdefault("AIRFLOW__LOGGING__NAMESPACE_LEVELS", "airflow.task.hooks=warning")
    from airflow.providers.postgres.hooks.postgres import PostgresHook  # noqa: PLC0415 - heavy

    hook = PostgresHook(postgres_conn_id=CONN_ID)
    with psycopg.connect(url) as conn:
        checkpoint(conn)
    started = time.perf_counter()
    hook.insert_rows(
        table=table,
        rows=rows,
        target_fields=COLUMNS,
        replace=True,
        replace_index=PK,
        commit_every=commit_every,
    )
    seconds = time.perf_counter() - started
    return Result(method, len(rows), seconds, f"commit_every={commit_every:,}{note}")


class SanityError(Exception):
    pass


def check_table(url: str, table: str, rows: list[tuple]) -> None:
    """The table holds exactly ``rows`` (count and amount total): every method loaded the same data."""
    with psycopg.connect(url) as conn:
        count, total = conn.execute(f"SELECT count(*), coalesce(sum(amount), 0) FROM {table}").fetchone()
    want = sum(r[4] for r in rows)
    if count != len(rows) or total != want:
        raise SanityError(f"{table}: {count:,} rows totalling {total}, expected {len(rows):,} totalling {want}")


# --------------------------------------------------------------------------- report


def server_facts(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        facts = {"version": conn.execute("SELECT version()").fetchone()[0]}
        for name in ("shared_buffers", "work_mem", "max_wal_size", "synchronous_commit", "fsync", "wal_level"):
            facts[name] = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
    return facts


def machine_facts() -> dict[str, str]:
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__} impl, libpq {psycopg.pq.version()})",
        "platform": platform.platform(),
    }


def command_line() -> str:
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(Path.cwd()))
    except ValueError:
        exe_s = "python" if exe.name.startswith("python") else str(exe)
    env = ""
    if os.environ.get("TILLFLOW_DATABASE_URL"):
        env = f"TILLFLOW_DATABASE_URL={shlex.quote(mask(os.environ['TILLFLOW_DATABASE_URL']))} "
    return env + shlex.join([exe_s, *sys.argv])


def render(
    results: list[Result], verdicts: list[tuple[str, float, float, bool]], header: list[str], notes: list[str]
) -> str:
    copy_rate = next(r.rate for r in results if r.method.startswith("bare COPY"))
    lines = [*header, ""]
    cols = f"{'method':<44} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'vs COPY':>8}  note"
    lines += [cols, "-" * len(cols)]
    for r in results:
        lines.append(
            f"{r.method:<44} {r.rows:>10,} {r.seconds:>9.2f} {r.rate:>10,.0f} {r.rate / copy_rate:>7.2f}x  {r.note}"
        )
    lines.append("")
    for name, value, target, ok in verdicts:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.2f}x (target >= {target:g}x)")
    store_rate = next(r.rate for r in results if r.method.startswith("store"))
    copy_rate_ = results[0].rate
    ir_rate = next((r.rate for r in results if r.method == INSERT_ROWS_METHOD), None)
    for r in results:
        if r.method.startswith("  + merge path") and ir_rate:
            ratios = f"{r.rate / copy_rate_:.2f}x, / insert_rows: {r.rate / ir_rate:.2f}x"
            lines.append(f"info  merge path / bare COPY: {ratios}")
    for r in results:
        if r.method in (INFO_COPY_FK, INFO_INSERT_ROWS_FK):
            what = r.method.replace("  info: ", "").replace(", table with an FK", " with an FK")
            lines.append(f"info  store / {what}: {store_rate / r.rate:.2f}x (per-row FK: avoided)")
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def server_label(server: str, facts: dict[str, str], embedded: bool) -> str:
    major = facts["version"].split()[1].split(".")[0]
    if embedded:
        return f"embedded-pg{major}"
    host = re.sub(r"[^A-Za-z0-9.]+", "-", conninfo_to_dict(server).get("host") or "local").strip("-")
    return f"{host}-pg{major}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per method (default 1,000,000)")
    ap.add_argument(
        "--insert-rows-rows",
        type=int,
        default=None,
        metavar="N",
        help="rows for PostgresHook.insert_rows (default: all of --rows); a subset is reported as such",
    )
    ap.add_argument(
        "--commit-every", type=int, default=1000, help="insert_rows commit_every (default 1000, the hook's own default)"
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of bare COPY and of the store's first pass; median (default 3)"
    )
    ap.add_argument("--keys", type=int, default=100, help="target keys; days = rows / keys (default 100)")
    ap.add_argument("--database", default="tillflow_bench", help="throwaway database to (re)create")
    ap.add_argument("--out", default=None, help="results file (default bench/results/upsert_<date>_<server>.txt)")
    ap.add_argument("--no-results", action="store_true", help="print only, write no results file")
    ap.add_argument("--no-info", action="store_true", help="skip the two info lines (loads into tables with the FK)")
    ap.add_argument("--keep-db", action="store_true", help="keep the throwaway database afterwards")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even if a target is missed")
    args = ap.parse_args(argv)
    if args.rows <= 0 or args.rows < args.keys:
        ap.error("--rows must be positive and at least --keys")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    ir_rows = args.rows if args.insert_rows_rows is None else min(args.insert_rows_rows, args.rows)
    if ir_rows <= 0:
        ap.error("--insert-rows-rows must be positive")

    from tillflow.specs import AccountSettings  # noqa: PLC0415
    from tillflow.store import Store  # noqa: PLC0415

    server, embedded = base_url()
    print(f"server: {mask(server)}{' (embedded default)' if embedded else ''}", flush=True)
    url = recreate_database(server, args.database)
    facts = server_facts(url)
    load_before = os.getloadavg()
    print(f"{facts['version']}\nthrowaway database {args.database!r} recreated", flush=True)

    results: list[Result] = []
    n = args.rows
    try:
        with Store.open(url, migrate_schema=True) as store:  # applies the migrations
            account = store.upsert_account(
                "bench", "bench", name="Benchmark", conn_id=CONN_ID, settings=AccountSettings()
            )
            with store.conn.transaction():
                store.conn.execute("CREATE SCHEMA bench")
                for table in (COPY_TABLE, COPY_FK_TABLE, INSERT_ROWS_TABLE, INSERT_ROWS_FK_TABLE):
                    # same columns, NOT NULLs, CHECKs, defaults and primary key as tillflow.revenue (LIKE
                    # copies no foreign key); origin defaults to 'integration' so the 5-column tuples load
                    store.conn.execute(f"CREATE TABLE {table} (LIKE tillflow.revenue INCLUDING ALL)")
                    store.conn.execute(f"ALTER TABLE {table} ALTER COLUMN origin SET DEFAULT 'integration'")
                for table in (COPY_FK_TABLE, INSERT_ROWS_FK_TABLE):  # the info lines: what a per-row FK costs
                    store.conn.execute(
                        f"ALTER TABLE {table} ADD FOREIGN KEY (account_id)"
                        " REFERENCES tillflow.accounts (id) ON DELETE CASCADE"
                    )

            started = time.perf_counter()
            rows = make_rows(n, account.id, args.keys)
            print(
                f"generated {n:,} rows in {time.perf_counter() - started:.1f}s "
                f"({args.keys} target keys x {-(-n // args.keys):,} days)",
                flush=True,
            )

            results.append(
                run_bare_copy(url, COPY_TABLE, rows, args.repeat, "bare COPY (baseline)", "empty table, no FK")
            )
            print(f"  bare COPY: {results[-1].seconds:.2f}s", flush=True)
            check_table(url, COPY_TABLE, rows)
            if not args.no_info:
                results.append(run_bare_copy(url, COPY_FK_TABLE, rows, args.repeat, INFO_COPY_FK, "not a target"))
                print(f"  bare COPY with FK: {results[-1].seconds:.2f}s", flush=True)
                check_table(url, COPY_FK_TABLE, rows)

            inserts = {"inserted": n, "updated": 0, "unchanged": 0, "kept": 0}
            results.append(
                run_store(store, rows, "store upsert_revenue_many (empty table)", "bench-1", inserts, args.repeat)
            )
            print(f"  store, empty table: {results[-1].seconds:.2f}s", flush=True)
            check_table(url, "tillflow.revenue", rows)
            same = {"inserted": 0, "updated": 0, "unchanged": n, "kept": 0}
            results.append(run_store(store, rows, "  + same rows again (all unchanged)", "bench-2", same))
            print(f"  store, unchanged: {results[-1].seconds:.2f}s", flush=True)
            changed = changed_rows(rows)
            n_changed = -(-n // 10)
            some = {"inserted": 0, "updated": n_changed, "unchanged": n - n_changed, "kept": 0}
            results.append(run_store(store, changed, "  + 10 % of amounts changed", "bench-3", some))
            print(f"  store, 10 % changed: {results[-1].seconds:.2f}s", flush=True)
            check_table(url, "tillflow.revenue", changed)
            del changed
            # the general path: the account already has revenue (one day outside the range), so the
            # first-load COPY does not apply and every row goes COPY → staging → merge
            with store.conn.transaction():
                store.conn.execute("TRUNCATE tillflow.revenue")
                store.conn.execute(
                    "INSERT INTO tillflow.revenue (account_id, target_key, business_date, hour, amount, origin)"
                    " VALUES (%s, 'seed', '1900-01-01', -1, 0, 'manual')", (account.id,)
                )
            results.append(run_store(store, rows, "  + merge path (account has revenue)", "bench-4", inserts))
            print(f"  store, merge path: {results[-1].seconds:.2f}s", flush=True)

        ir = rows[:ir_rows]
        print(f"  insert_rows on {len(ir):,} rows …", flush=True)
        subset_note = f"; SUBSET: {len(ir):,} of {n:,} rows" if len(ir) < n else ""
        results.append(run_insert_rows(url, INSERT_ROWS_TABLE, ir, args.commit_every, INSERT_ROWS_METHOD, subset_note))
        print(f"  insert_rows: {results[-1].seconds:.2f}s", flush=True)
        check_table(url, INSERT_ROWS_TABLE, ir)
        if not args.no_info:
            results.append(
                run_insert_rows(
                    url,
                    INSERT_ROWS_FK_TABLE,
                    ir,
                    args.commit_every,
                    INFO_INSERT_ROWS_FK,
                    subset_note + "; not a target",
                )
            )
            print(f"  insert_rows with FK: {results[-1].seconds:.2f}s", flush=True)
            check_table(url, INSERT_ROWS_FK_TABLE, ir)
    except SanityError as exc:
        print(f"SANITY CHECK FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep_db:
            drop_database(server, args.database)
    load_after = os.getloadavg()

    copy_r = results[0]
    store_r = next(r for r in results if r.method.startswith("store"))
    ir_r = next(r for r in results if r.method == INSERT_ROWS_METHOD)
    verdicts = [
        ("store / bare COPY", store_r.rate / copy_r.rate, STORE_TARGET, store_r.rate >= STORE_TARGET * copy_r.rate),
        (
            "store / insert_rows",
            store_r.rate / ir_r.rate,
            INSERT_ROWS_TARGET,
            store_r.rate >= INSERT_ROWS_TARGET * ir_r.rate,
        ),
    ]
    today = datetime.now().astimezone()
    mach = machine_facts()
    header = [
        f"tillflow upsert benchmark, {today:%Y-%m-%d %H:%M %Z}",
        f"command:  {command_line()}",
        f"server:   {facts['version']}{'  [embedded pgserver, the default]' if embedded else ''}",
        "settings: " + ", ".join(f"{k}={facts[k]}" for k in facts if k != "version"),
        f"machine:  nproc={mach['nproc']}, memory={mach['memory']}, {mach['python']}, psycopg {mach['psycopg']}",
        f"          {mach['platform']}",
        f"load:     1-min load average {load_before[0]:.2f} at start, {load_after[0]:.2f} at end",
        f"data:     {n:,} canonical daily revenue rows (1 account, {args.keys} target keys x "
        f"{-(-n // args.keys):,} days, Decimal amounts), generated once and reused by every method",
    ]
    subset = (
        " (the full set)."
        if ir_rows == n
        else f" -- a SUBSET of the {n:,}; its rows/s is compared as measured on the subset."
    )
    notes = [
        "notes:",
        "- store = Store.upsert_revenue_many(rows, mode='overwrite'); seconds cover the whole call. Into an",
        "  account with no revenue yet (a first or history load) it COPYs straight into tillflow.revenue;",
        "  otherwise COPY into a TEMP staging table, counts, then the merge ('+ merge path' line: the same",
        "  1M rows as new days of an account that already has revenue, i.e. the general path).",
        "  tillflow.revenue has no foreign key (the store checks a batch's account ids in one query; a trigger",
        "  deletes an account's revenue with it): a per-row FK check would halve the load rate. The '+'",
        "  lines are extra passes (not in the verdicts; the merge path is shown against the targets as info).",
        f"- bare COPY = psycopg COPY {COPY_TABLE} (…) FROM STDIN with write_row of the same tuples, one",
        "  transaction, into an empty table with the same columns, NOT NULL/CHECK constraints, defaults and",
        "  primary key as tillflow.revenue (CREATE TABLE … (LIKE tillflow.revenue INCLUDING ALL), origin",
        "  defaulting to 'integration') but no foreign key. This is the baseline of the ratios.",
        f"- info lines: the same bare COPY into {COPY_FK_TABLE} and the same insert_rows into",
        f"  {INSERT_ROWS_FK_TABLE}: tables that also have a per-row foreign key to tillflow.accounts, to show",
        "  what such a key would cost (why tillflow.revenue has none). Not targets (--no-info skips).",
        f"- insert_rows = PostgresHook(postgres_conn_id='{CONN_ID}').insert_rows(table='{INSERT_ROWS_TABLE}',",
        f"  rows, target_fields=[5 columns], replace=True, replace_index={PK},",
        f"  commit_every={args.commit_every:,}{' (the hook default)' if args.commit_every == 1000 else ''}) into"
        " another empty table of the bare-COPY shape (no FK);",
        f"  connection from AIRFLOW_CONN_{CONN_ID.upper()} (JSON form, set by the script). The provider runs",
        "  on psycopg 3 here (SQLAlchemy 2), whose executemany pipelines the statements.",
        f"  Rows: {ir_rows:,}{subset}",
        f"- bare COPY and the store's first pass: median of {args.repeat} run(s), each into an emptied table.",
        "  A CHECKPOINT precedes every timed run. Every table is checked afterwards (row count and amount",
        "  total equal to the input).",
    ]
    report = render(results, verdicts, header, notes)
    print()
    print(report, end="")
    if not args.no_results:
        out = (
            Path(args.out)
            if args.out
            else ROOT / "bench" / "results" / f"upsert_{today:%Y-%m-%d}_{server_label(server, facts, embedded)}.txt"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"written to {out}")
    failed = [v for v in verdicts if not v[3]]
    return 1 if failed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
