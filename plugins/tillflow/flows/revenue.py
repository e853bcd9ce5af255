"""Revenue: what the POS sold per source key (location, revenue group, branch), summed per target key.

* **daily** (``revenue``): one value per target key and business day — Planday revenue units,
  Shiftbase team days. Closed business days with lookback (Ajour: the account's hour fetches the days
  before), or the open day plus lookback for intra-day flows (MplusKASSA every 15 minutes).
* **hourly** (``revenue_hourly``): one value per target key, business day and hour of that business
  day — Eitje revenue groups. The open day plus lookback by default; every listed source key gated.

Canonical table ``tillflow.revenue``, key (account, target key, business date, hour; -1 = whole day).
Source keys carrying data must be mapped (or marked inactive) before the account syncs. Delivery is a
keyed upsert. Per-flow settings: ``vat`` (incl/excl) overrides the account's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, EmailStr

from tillflow.delivery.keyed import deliver_keyed
from tillflow.flows.base import FlowKind
from tillflow.mapping import apply_mapping
from tillflow.records import RevenueLine


class RevenueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vat: Literal["incl", "excl"] | None = None
    #: off: the account does not run this flow (MplusKASSA's "revenue on/off")
    enabled: bool = True
    #: where import problems of this flow are mailed (once a day per problem)
    notify_email: EmailStr | None = None


class DailyRevenue(FlowKind):
    name: ClassVar[str] = "revenue"
    record = RevenueLine
    table: ClassVar[str] = "revenue"
    key: ClassVar[tuple[str, ...]] = ("target_key", "business_date", "hour")
    windows = ("closed_days", "open_day")
    gate = "with_data"
    delivery = "keyed_upsert"
    settings_model = RevenueSettings
    hourly: ClassVar[bool] = False

    def parse(self, source_cls: Any, page: Any) -> tuple[Sequence[RevenueLine], Sequence[Any]]:
        lines, rejects = source_cls.parse_page(page)
        if not self.hourly:  # a source that reports hours still feeds a daily flow: sum them per day
            lines = [ln if ln.hour is None else ln.model_copy(update={"hour": None}) for ln in lines]
        return lines, rejects

    def map(self, records, rules, *, account, flow_settings, mapping_kind: str = "location"):
        vat = (flow_settings.vat if flow_settings is not None else None) or account.settings.vat
        return apply_mapping(records, rules, vat=vat, kind=mapping_kind)

    def upsert(self, store, account_id, rows, *, mode, run_id) -> dict[str, int]:
        result = store.upsert_revenue(account_id, rows, mode=mode, run_id=run_id)
        return {"upserted": result.upserted, "unchanged": result.unchanged, "kept": result.kept}

    def deliver(self, store, item, client, *, run_id, log=None) -> dict[str, int]:
        return deliver_keyed(store, item, client, kind=self.name, hourly=self.hourly, run_id=run_id, label=item.label)


class HourlyRevenue(DailyRevenue):
    """Hours are identified by (business date, hour of the business day): whole hours since the business
    day started in the account's timezone at its cutoff — 0..24 on a 25-hour day, 0..22 on a 23-hour one —
    so each hour is one instant and the repeated autumn 02:00 is two rows. Every group the source lists
    must be mapped or inactive (``all_listed``), not only those with sales in the window."""

    name: ClassVar[str] = "revenue_hourly"
    windows = ("open_day", "closed_days")
    gate = "all_listed"
    hourly: ClassVar[bool] = True

    def deliver(self, store, item, client, *, run_id, log=None) -> dict[str, int]:
        settings = store.account_by_id(item.account_id).settings  # hours of the business day → instants
        client.set_business_day(settings.timezone, settings.business_day_cutoff)
        # hour rows, and whole-day rows entered by hand (Eitje keeps a value per group and day as well)
        return deliver_keyed(store, item, client, kind=self.name, hourly=None, run_id=run_id, label=item.label)
