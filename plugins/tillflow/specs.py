"""Pydantic models of an integration spec (``dags/<dag_id>.yaml``) and of an account's settings.

Both forbid unknown fields; a bad value fails with a message that names the field
(:func:`format_validation_error`). No Airflow import.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator, model_validator

from tillflow.errors import ConfigError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WriteMode = Literal["overwrite", "insert_only", "keep_manual"]
#: the fixed set DAG tags are drawn from (checked by tests/dags)
TAG_PREFIXES = ("source:", "target:", "flow:", "tillflow")
KNOWN_SOURCES = ("ajour", "kassatellen", "mpluskassa", "kashclick", "ccv_salespos", "eaccounting")
KNOWN_TARGETS = ("planday", "eitje", "shiftbase", "pennylane", "eaccounting", "ccv_salespos")


#: the same rule as the CHECK on tillflow.accounts.account_key
ACCOUNT_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_account_key(key: str) -> str:
    if not ACCOUNT_KEY.match(key):
        raise ConfigError(
            f"key: {key!r} must be 1–63 lower-case letters, digits, - or _ (starting with a letter or digit)"
        )
    return key


def format_validation_error(exc: ValidationError, *, where: str) -> str:
    """One line per problem: ``<where>: <field.path>: <message> (got <value>)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or "got " in msg or repr(got) in msg else f" (got {got!r})"
        lines.append(f"{where + ': ' if where else ''}{loc}: {msg}{shown}")
    return "\n".join(lines)


def _check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}") from None
    return value


def _parse_hhmm(value: Any) -> time:
    if isinstance(value, time):
        return value
    for fmt in ("%H:%M", "%H:%M:%S"):
        try:
            return datetime.strptime(str(value), fmt).time()
        except ValueError:
            continue
    raise ValueError(f"expected HH:MM, got {value!r}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bounds(_Strict):
    default: int
    min: int = 1
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"need min <= default <= max, got {self.min} <= {self.default} <= {self.max}")
        return self


class IntegrationSpec(_Strict):
    """What varies between integrations; the behaviour lives in Python (factory, operators, clients)."""

    dag_id: str = Field(pattern=r"^[a-z0-9]+_to_[a-z0-9_]+$")
    description: str
    source: str
    target: str
    flows: list[Literal["revenue"]] = Field(min_length=1)
    schedule: str
    timezone: str = "UTC"
    start_date: date = date(2026, 1, 1)
    #: the account's own run time: hourly ticks, each account runs at its chosen hour
    per_account_run_time: bool = False
    earliest_run_time: time = time(5, 0)
    lookback_days: Bounds = Bounds(default=1, max=31)
    business_day_cutoff: time = time(5, 0)
    owners: list[EmailStr] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_seconds: int = Field(default=60, ge=1)
    max_active_tis_per_dagrun: int = Field(default=4, ge=1)
    execution_timeout_minutes: int = Field(default=30, ge=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)

    @field_validator("earliest_run_time", "business_day_cutoff", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> time:
        return _parse_hhmm(v)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v not in KNOWN_SOURCES:
            raise ValueError(f"unknown source {v!r}; known: {', '.join(KNOWN_SOURCES)}")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v not in KNOWN_TARGETS:
            raise ValueError(f"unknown target {v!r}; known: {', '.join(KNOWN_TARGETS)}")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            if not tag.startswith(TAG_PREFIXES):
                raise ValueError(f"tag {tag!r} is not from the fixed set ({', '.join(TAG_PREFIXES)}…)")
        return v

    @property
    def all_tags(self) -> list[str]:
        base = ["tillflow", f"source:{self.source}", f"target:{self.target}", *(f"flow:{f}" for f in self.flows)]
        return sorted(set(base + self.tags))


def load_spec(path: str | Path) -> IntegrationSpec:
    """Read and validate a YAML spec; a bad spec raises ConfigError naming file and field."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path.name}: cannot read spec: {exc}") from None
    try:
        return IntegrationSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=path.name)) from None


class AccountSettings(_Strict):
    """One customer's settings for one integration (stored as JSON in ``tillflow.accounts``)."""

    timezone: str = "Europe/Copenhagen"
    vat: Literal["incl", "excl"] = "incl"
    write_mode: WriteMode = "keep_manual"
    lookback_days: int = Field(default=3, ge=1, le=31)
    run_time: time = time(5, 0)
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1
    )
    active: bool = True
    start_date: date | None = None
    activated_at: datetime | None = None
    business_day_cutoff: time = time(5, 0)
    owner_email: EmailStr | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)

    @field_validator("run_time", "business_day_cutoff", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> time:
        return _parse_hhmm(v)

    @field_validator("run_time")
    @classmethod
    def _on_the_hour(cls, v: time) -> time:
        if v.minute or v.second:
            raise ValueError(f"run_time must be on the hour (the DAG ticks hourly), got {v:%H:%M}")
        return v

    @field_validator("weekdays")
    @classmethod
    def _unique_days(cls, v: list[str]) -> list[str]:
        return sorted(set(v), key=WEEKDAYS.index)

    def check_against(self, spec: IntegrationSpec) -> AccountSettings:
        """Apply the integration's own limits (lookback bounds, earliest run time)."""
        lb = spec.lookback_days
        if not lb.min <= self.lookback_days <= lb.max:
            raise ConfigError(
                f"lookback_days: must be between {lb.min} and {lb.max} for {spec.dag_id}, got {self.lookback_days}"
            )
        if spec.per_account_run_time and self.run_time < spec.earliest_run_time:
            raise ConfigError(
                f"run_time: {spec.dag_id} runs at {spec.earliest_run_time:%H:%M} at the earliest, "
                f"got {self.run_time:%H:%M}"
            )
        if spec.per_account_run_time:
            self._check_on_a_tick(spec)
        return self

    def _check_on_a_tick(self, spec: IntegrationSpec) -> None:
        """The account's hour, in its own timezone, must fall on one of the DAG's ticks (winter and summer)."""
        from croniter import croniter

        for day in (date(2026, 1, 15), date(2026, 7, 15)):
            local = datetime.combine(day, self.run_time, tzinfo=ZoneInfo(self.timezone))
            at_dag = local.astimezone(ZoneInfo(spec.timezone))
            if not croniter.match(spec.schedule, at_dag.replace(tzinfo=None)):
                raise ConfigError(
                    f"run_time: {self.run_time:%H:%M} {self.timezone} is {at_dag:%H:%M} {spec.timezone} "
                    f"on {day}, when {spec.dag_id} does not tick ({spec.schedule})"
                )

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        data["run_time"] = f"{self.run_time:%H:%M}"
        data["business_day_cutoff"] = f"{self.business_day_cutoff:%H:%M}"
        return data


def parse_settings(
    data: dict[str, Any], *, spec: IntegrationSpec | None = None, where: str = "settings"
) -> AccountSettings:
    """Validate settings (a dict, e.g. from the CLI or the accounts table); ConfigError names the field."""
    try:
        settings = AccountSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where=where)) from None
    return settings.check_against(spec) if spec else settings
