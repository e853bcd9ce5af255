"""What every flow kind declares, and the steps the platform runs for it. No Airflow import.

The platform (``tillflow.sync``) runs the same steps for every kind — fetch (land raw pages), parse,
map, upsert into the canonical table, deliver — and asks the kind how to do each one. A kind never
talks to Airflow; it gets the store, the clients and the work item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tillflow.errors import ConfigError

WindowStrategy = Literal["closed_days", "open_day", "snapshot"]
Gate = Literal["with_data", "all_listed"]
DeliveryStrategy = Literal["keyed_upsert", "create_if_absent", "ledger_outbox"]


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FlowKind(ABC):
    """One kind of data. Subclasses set the class attributes and implement the steps."""

    name: ClassVar[str]
    #: the pydantic record a source page parses into
    record: ClassVar[type[BaseModel]]
    #: canonical table in the ``tillflow`` schema and its key columns (besides account_id)
    table: ClassVar[str]
    key: ClassVar[tuple[str, ...]]
    #: window strategies this kind supports; the first is its default
    windows: ClassVar[tuple[WindowStrategy, ...]]
    #: which source keys must be mapped before an account syncs: those that carry data in the window,
    #: or every key the source lists (a group without sales today still closes the gate)
    gate: ClassVar[Gate] = "with_data"
    delivery: ClassVar[DeliveryStrategy]
    #: per-account settings of a flow of this kind (``AccountSettings.flows[<flow name>]``)
    settings_model: ClassVar[type[BaseModel]] = NoSettings

    def mapping_kinds(self, source_cls: Any) -> tuple[str, ...]:
        """The mapping kinds (``tillflow.mappings.kind``) this kind needs from that source."""
        return (source_cls.mapping_kind,)

    #: a kind that maps the source's items through its settings instead of the mapping table says through what
    #: (``{flow}`` is the flow's settings key); ``mappings list`` prints it
    mapped_through: ClassVar[str] = ""

    def settings_mapping(self, flow_settings: dict[str, Any], item_kind: str, key: str, *, flow_name: str):
        """How this kind's own settings map one item the source lists (``mappings list``): ``(text, mapped)``,
        or None when the mapping table maps it (``mappings set``) — the default."""
        return None

    def check_settings(self, data: dict[str, Any], *, flow_name: str) -> BaseModel:
        """Validate an account's settings for one flow; ConfigError names ``flows.<flow>.<field>``."""
        from tillflow.specs import format_validation_error

        try:
            return self.settings_model.model_validate(data or {})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where=f"settings.flows.{flow_name}")) from None

    @abstractmethod
    def parse(self, source_cls: Any, page: Any) -> tuple[Sequence[Any], Sequence[Any]]:
        """Records and rejects of one landed page (no network, no credentials: replays call it)."""

    @abstractmethod
    def map(self, records: Sequence[Any], rules: dict[str, Any], *, account: Any, flow_settings: Any) -> Any:
        """Records → canonical rows; raises NeedsMapping naming what is unmapped."""

    @abstractmethod
    def upsert(self, store: Any, account_id: int, rows: Any, *, mode: str, run_id: str) -> dict[str, int]:
        """Merge rows into the canonical table with the write mode; returns activity counters."""

    @abstractmethod
    def deliver(self, store: Any, item: Any, client: Any, *, run_id: str, log: Any) -> dict[str, int]:
        """Send what changed to the target with the kind's delivery strategy; returns counters.
        Finishes what it can: a refused row is recorded failed and the others still go."""

    def record_key(self, record: Any) -> tuple:
        """A parsed record's identity: a later page's record with the same key replaces it."""
        return (record.source_key, record.business_date, record.hour)

    def record_day(self, record: Any, settings: Any = None) -> Any:
        """The business date a parsed record belongs to (records outside the item's window are dropped);
        ``settings``: the account's, for a record that carries an instant (its timezone and cutoff)."""
        return record.business_date

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.name,
            "record": self.record.__name__,
            "table": f"tillflow.{self.table}",
            "key": ["account_id", *self.key],
            "windows": list(self.windows),
            "gate": self.gate,
            "delivery": self.delivery,
            "settings": sorted(self.settings_model.model_fields),
        }
