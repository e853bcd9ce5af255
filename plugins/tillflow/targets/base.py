"""The interface every target client implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import date, time
from decimal import Decimal
from typing import ClassVar

from tillflow.errors import ConfigError
from tillflow.records import DeliveryResult, RefItem, TargetRow
from tillflow.sources.base import ConnectionInfo, Window, close_http


class TargetClient(ABC):
    name: ClassVar[str]
    #: reference-data kind whose keys are the ``target_key`` of delivered rows
    mapping_kind: ClassVar[str]
    #: the flow kinds this target takes
    flows: ClassVar[tuple[str, ...]] = ()

    def _check(self, flow: str) -> None:
        if flow not in self.flows:
            raise ValueError(f"{self.name} has no flow {flow!r}; known: {', '.join(self.flows)}")

    @staticmethod
    def int_key(key: str, what: str) -> int:
        """A mapping target key that the target identifies by an integer id; ConfigError names it."""
        try:
            return int(str(key).strip())
        except ValueError:
            raise ConfigError(f"mapping target key {key!r} is not {what} (an integer)") from None

    @classmethod
    @abstractmethod
    def from_connection(cls, conn: ConnectionInfo) -> TargetClient: ...

    def close(self) -> None:
        """Release the client's HTTP session, as :meth:`SourceClient.close`."""
        close_http(self)

    def set_business_day(self, tz: str, cutoff: time) -> None:  # noqa: B027 - optional hook, no-op by default
        """The account's timezone and business-day cutoff, for a target that turns hours of a business day into
        instants or wall times (Eitje hours, Shiftbase clock times). Called before each account's delivery,
        existing() and read-back; the rest ignore it."""

    @abstractmethod
    def test_connection(self) -> list[RefItem]:
        """Check the credentials (raise AuthError) and return the items rows are mapped to."""

    @abstractmethod
    def existing(
        self, flow: str, target_keys: list[str], window: Window
    ) -> dict[tuple[str, date, int | None], Decimal]:
        """Values the target holds now for these keys and days (to honour insert_only / keep_manual)."""

    @abstractmethod
    def deliver(self, flow: str, row: TargetRow) -> DeliveryResult:
        """Write one row with the target's own semantics; 'skipped' (with the reason) when the target
        declines it for a known business reason (Planday 409: no opening day)."""
