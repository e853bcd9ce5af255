"""The interface every POS client implements, and the connection fields it is built from.

A client is plain Python (no Airflow import). Operators turn an Airflow Connection into a
:class:`ConnectionInfo` and call :meth:`SourceClient.from_connection`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from typing import Any, ClassVar

from tillflow.records import RawPage, RefItem, Reject, RevenueLine


@dataclass(frozen=True)
class ConnectionInfo:
    """The fields of an Airflow Connection a client needs. ``repr`` never shows the password."""

    conn_id: str
    host: str = ""
    login: str = ""
    password: str = field(default="", repr=False)
    schema: str = ""
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_airflow(cls, conn_id: str, conn: Any) -> ConnectionInfo:
        """From an Airflow Connection (duck-typed: no Airflow import here)."""
        return cls(conn_id=conn_id, host=conn.host or "", login=conn.login or "", password=conn.password or "",
                   schema=conn.schema or "", port=conn.port, extra=conn.extra_dejson or {})

    def secrets(self) -> list[str]:
        """Values that must never appear in logs, XCom or errors."""
        found = [self.password] if self.password else []
        for key, value in self.extra.items():
            if isinstance(value, str) and value and any(
                word in key.lower() for word in ("secret", "token", "password", "key")
            ):
                found.append(value)
        return found


@dataclass(frozen=True)
class Window:
    """Inclusive range of business dates. ``tz`` and ``cutoff`` (the account's timezone and business-day
    cutoff) travel with a window handed to a source that asks by instant (Kassatellen hours); they take
    no part in equality."""

    start: date
    end: date
    tz: str | None = field(default=None, compare=False)
    cutoff: time | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"window end {self.end} is before start {self.start}")

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def close_http(client: Any) -> None:
    """Close ``client.http`` (a :class:`tillflow.http.HttpClient`) when the client has one."""
    http = getattr(client, "http", None)
    if http is not None and callable(getattr(http, "close", None)):
        http.close()


class SourceClient(ABC):
    """A POS: test the credentials, list reference data, fetch raw pages, parse them into records.

    ``fetch`` and ``parse`` are separate so that landed raw pages can be replayed through ``parse``
    after a mapping change without calling the POS again.
    """

    name: ClassVar[str]
    #: reference-data kind whose keys are the ``source_key`` of revenue lines (what gets mapped)
    mapping_kind: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_connection(cls, conn: ConnectionInfo) -> SourceClient: ...

    def close(self) -> None:
        """Release the client's HTTP session (its keep-alive connection); a client without one has nothing to
        close. Every caller closes a client this way, whatever transport it uses."""
        close_http(self)

    @abstractmethod
    def test_connection(self) -> list[RefItem]:
        """Check the credentials (raise AuthError) and return the items that get mapped."""

    @abstractmethod
    def reference_data(self) -> dict[str, list[RefItem]]: ...

    #: the longest date range one request may ask for (the vendor answers 400 beyond it)
    max_days_per_request: ClassVar[int] = 31

    def chunks(self, window: Window) -> list[Window]:
        """``window`` split into consecutive windows of at most :attr:`max_days_per_request` days."""
        out, start = [], window.start
        while start <= window.end:
            end = min(window.end, start + timedelta(days=self.max_days_per_request - 1))
            out.append(Window(start, end, tz=window.tz, cutoff=window.cutoff))
            start = end + timedelta(days=1)
        return out

    @abstractmethod
    def fetch(self, flow: str, window: Window) -> list[RawPage]: ...

    @abstractmethod
    def parse(self, page: RawPage) -> tuple[list[RevenueLine], list[Reject]]:
        """Turn one landed page into records and rejects. Must not use credentials or the network:
        replay parses landed pages with no connection at hand (see :meth:`parse_page`)."""

    @classmethod
    def parse_page(cls, page: RawPage) -> tuple[list[RevenueLine], list[Reject]]:
        """Parse without a connection (replay from raw landing)."""
        return cls.parse(object.__new__(cls), page)
