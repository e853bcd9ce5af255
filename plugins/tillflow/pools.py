"""One Airflow pool per rate-limited vendor, so a vendor's limit holds across workers.

tillflow paces every vendor call in-process (``tillflow.http``: one limiter per key, shared by the
threads of a worker process). A limit that spans every customer — Planday's per client id, Visma
eAccounting's per client — is therefore paced once *per process*: two shards in two Celery workers
would send twice the rate. A pool caps how many ``run`` task instances (shards) talk to a vendor at
once, across every DAG and worker, so ``slots × the per-process pace`` stays under the documented limit:

- **global limits** (one app id serves every customer): ``slots = floor(limit / per-process pace)``;
- **per-account limits** (per token, portal or API key): one account is served by one task at a time,
  so the limit holds by itself; the pool only bounds concurrency (8 = a run's ``max_shards``);
- sources have no pool: none publishes a limit, and their credentials are per account.

A DAG's ``run`` tasks take the pool of the most constrained system its flows touch (source or target),
so CCV ↔ eAccounting's orders, products and stock DAGs share ``tillflow_eaccounting``.

Pools are opt-in: ``TILLFLOW_POOLS=1`` in the environment of the DAG processor and workers (``make up``
and ``docker-compose.yaml`` set it, after creating the pools). Airflow never schedules a task whose pool
does not exist (the scheduler logs "Tasks using non-existent pool" and the task waits forever), and a
DAG file cannot check at parse time whether a pool exists (no database access), so a deployment that
has not created them keeps ``default_pool``. Create or update them with::

    python -m tillflow.pools apply          # airflow pools import of POOLS (idempotent)
    python -m tillflow.pools json [--output FILE]

No Airflow import at module level: this module is imported by the factory at parse time and run as a
script in containers without tillflow's requirements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ENV = "TILLFLOW_POOLS"
DEFAULT_POOL = "default_pool"  # airflow.models.pool.Pool.DEFAULT_POOL_NAME
PREFIX = "tillflow_"
#: per-account limits: as many shards at once as one run maps (``execution.max_shards`` default)
PER_ACCOUNT_SLOTS = 8


@dataclass(frozen=True)
class VendorPool:
    """A vendor's pool. ``limit`` and ``pace`` are requests per second (``None``: none published / per account)."""

    system: str
    slots: int
    #: the documented limit, in the vendor's words
    documented: str
    #: the limit's scope: ``global`` (every customer of the app) or ``account``
    scope: str
    #: the documented global limit and tillflow's per-process pace of it (global scope only)
    limit: float | None = None
    pace: float | None = None

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.system}"

    @property
    def description(self) -> str:
        if self.scope == "global":
            how = f"{self.slots} run task(s) at once x {self.pace:g}/s per worker process <= {self.limit:.1f}/s"
        else:
            how = f"per account (one task per account at a time); at most {self.slots} run tasks at once"
        return f"tillflow: {self.system} ({self.documented}); {how}"


def _global(system: str, documented: str, limit: float, pace: float) -> VendorPool:
    return VendorPool(system, max(1, math.floor(limit / pace)), documented, "global", limit, pace)


def _per_account(system: str, documented: str) -> VendorPool:
    return VendorPool(system, PER_ACCOUNT_SLOTS, documented, "account")


#: system (as in specs: ``target:`` / ``source:``) → its pool. Paces are the clients' defaults
#: (``default_client_rate_per_second`` / ``default_rate_per_second`` in ``tillflow.targets``).
POOLS: dict[str, VendorPool] = {
    p.system: p
    for p in (
        # 2,000/min per client id across all portals (newer reference; 750/min per portal); each
        # process paces a client id at 30/s. Raise the slots only with client_rate_per_second <= 33/slots.
        _global("planday", "2,000 requests/min per client id", 2000 / 60, 30.0),
        # 600/min per client and endpoint; each process paces the client id at 9.5/s
        _global("eaccounting", "600 requests/min per client and endpoint", 600 / 60, 9.5),
        _per_account("pennylane", "25 requests per 5 s per token"),
        _per_account("eitje", "no published limit; partner and customer credentials per account"),
        _per_account("shiftbase", "no published limit; API key per account"),
        _per_account("ccv_salespos", "limits per method and resource, per shop"),
    )
}


def vendor_pool(spec: Any, flows: Iterable[Any]) -> str:
    """The pool for a DAG's ``run`` tasks: the most constrained system its flows touch (fewest slots;
    on a tie the first flow's target), or ``default_pool`` when none has a pool."""
    systems: list[str] = []
    for flow in flows:
        systems += [spec.target_of(flow), spec.source_of(flow)]
    candidates = [POOLS[s] for s in systems if s in POOLS]
    if not candidates:
        return DEFAULT_POOL
    return min(candidates, key=lambda p: p.slots).name  # min() keeps the first of equals


def enabled(environ: dict[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(ENV, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def pool_for(spec: Any, flows: Iterable[Any], *, environ: dict[str, str] | None = None) -> str:
    """The pool of a DAG's ``run`` tasks: :func:`vendor_pool` when ``TILLFLOW_POOLS`` is on, else ``default_pool``."""
    return vendor_pool(spec, flows) if enabled(environ) else DEFAULT_POOL


def as_import() -> dict[str, dict[str, Any]]:
    """The pools in ``airflow pools import`` format."""
    return {p.name: {"slots": p.slots, "description": p.description, "include_deferred": False} for p in POOLS.values()}


def apply(airflow: list[str] | None = None) -> int:
    """Create or update every pool through ``airflow pools import`` (the metadata DB must be migrated)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="tillflow_pools_", delete=False) as fh:
        json.dump(as_import(), fh, indent=2)
    try:
        cmd = [*(airflow or [sys.executable, "-m", "airflow"]), "pools", "import", fh.name]
        done = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        return done.returncode
    for p in POOLS.values():
        print(f"pool {p.name}: {p.slots} slot(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tillflow.pools", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("apply", help="create or update the pools (airflow pools import)")
    j = sub.add_parser("json", help="the pools in `airflow pools import` format")
    j.add_argument("--output", default="-", help="file to write ('-' = stdout)")
    args = parser.parse_args(argv)
    if args.cmd == "apply":
        return apply()
    text = json.dumps(as_import(), indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
