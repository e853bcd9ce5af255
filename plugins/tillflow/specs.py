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
        msg = err["msg"].removeprefix("Value error, ")
        # a model-level rule names its field itself ("flows: duplicate flow name(s) …"): no "(root)" before it
        loc = ".".join(str(p) for p in err["loc"]) or ("" if re.match(r"[\w.]+: ", msg) else "(root)")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or "got " in msg or repr(got) in msg else f" (got {got!r})"
        lines.append(f"{where + ': ' if where else ''}{loc + ': ' if loc else ''}{msg}{shown}")
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


CRON_FIELDS = 5
DAG_ID = r"^[a-z0-9]+(_[a-z0-9]+)*_to_[a-z0-9]+(_[a-z0-9]+)*$"


def _check_cron(value: str) -> str:
    from croniter import croniter

    if len(str(value).split()) != CRON_FIELDS or not croniter.is_valid(str(value)):
        raise ValueError(f"not a 5-field cron expression: {value!r}")
    return value


class ExecutionSpec(_Strict):
    """How a scheduled run spreads its due accounts: shards (mapped task instances) × threads."""

    #: at most this many mapped task instances per run (far below ``[core] max_map_length``, 1024)
    max_shards: int = Field(default=8, ge=1, le=256)
    #: fewer accounts than this per shard is not worth another task instance
    min_accounts_per_shard: int = Field(default=25, ge=1)
    #: accounts run concurrently inside one shard (one database connection per thread)
    threads: int = Field(default=8, ge=1, le=64)


class ActivationSpec(_Strict):
    """Activation backfill (``due: activation``): once per activation, ``delay_minutes`` after it, the past
    ``days`` business days are fetched; an attempt that does not succeed (mapping or settings incomplete,
    a failure) is tried again ``retry_minutes`` later, until one succeeds."""

    days: int = Field(default=31, ge=1, le=92)
    delay_minutes: int = Field(default=5, ge=0, le=24 * 60)
    retry_minutes: int = Field(default=60, ge=5, le=7 * 24 * 60)
    #: days: the past ``days`` business days and today; fiscal_year_start: from the flow's setting
    #: ``fiscal_year_start`` through yesterday (the history import of an accounting flow)
    since: Literal["days", "fiscal_year_start"] = "days"


class FlowSpec(_Strict):
    """One flow: a kind of data moved from ``source`` to ``target`` on ``schedule``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    kind: str
    source: str | None = None  # the integration's source by default
    target: str | None = None  # the integration's target by default
    schedule: str
    #: the DAG this flow runs in; by default flows that share a schedule share a DAG
    dag_id: str | None = Field(default=None, pattern=DAG_ID)
    #: how the window is chosen; the kind's default when empty
    window: Literal["closed_days", "open_day", "snapshot"] | None = None
    #: every_tick: every active account on every tick; account_run_time: at the account's own time and weekdays
    #: activation: once per activation of an account, its past month (see ``activation``)
    due: Literal["every_tick", "account_run_time", "activation"] = "every_tick"
    activation: ActivationSpec | None = None
    #: read the account's settings of another flow of this spec (a history import shares the daily flow's)
    settings_from: str | None = None
    earliest_run_time: time = time(0, 0)
    lookback_days: Bounds = Bounds(default=1, max=31)
    business_day_cutoff: time = time(5, 0)
    #: a run time missed (scheduler down, an overrunning run) is caught up at a later tick up to this long after
    catch_up_hours: int = Field(default=72, ge=1, le=24 * 31)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        return _check_cron(v)

    @field_validator("earliest_run_time", "business_day_cutoff", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> time:
        return _parse_hhmm(v)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from tillflow.flows import kind_names

        if v not in kind_names():
            raise ValueError(f"unknown flow kind {v!r}; known: {', '.join(kind_names())}")
        return v

    @model_validator(mode="after")
    def _window_fits_kind(self) -> FlowSpec:
        from tillflow.flows import get_kind

        allowed = get_kind(self.kind).windows
        if self.window is not None and self.window not in allowed:
            raise ValueError(f"window {self.window!r} does not fit kind {self.kind!r}; allowed: {', '.join(allowed)}")
        return self

    @model_validator(mode="after")
    def _activation(self) -> FlowSpec:
        if self.due == "activation" and self.activation is None:
            object.__setattr__(self, "activation", ActivationSpec())
        if self.due != "activation" and self.activation is not None:
            raise ValueError("activation: only for a flow with due: activation")
        return self

    @property
    def settings_key(self) -> str:
        """The key of this flow's settings in ``AccountSettings.flows``."""
        return self.settings_from or self.name

    @property
    def window_strategy(self) -> str:
        from tillflow.flows import get_kind

        return self.window or get_kind(self.kind).windows[0]


class IntegrationSpec(_Strict):
    """What varies between integrations; the behaviour lives in Python (factory, operators, flow kinds, clients)."""

    #: the integration's id: accounts belong to it; also the DAG id when the spec yields one DAG
    integration: str = Field(pattern=DAG_ID)
    description: str
    source: str
    target: str
    flows: list[FlowSpec] = Field(min_length=1)
    timezone: str = "UTC"
    start_date: date = date(2026, 1, 1)
    owners: list[EmailStr] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_seconds: int = Field(default=60, ge=1)
    execution_timeout_minutes: int = Field(default=30, ge=1)
    execution: ExecutionSpec = ExecutionSpec()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)

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

    @model_validator(mode="after")
    def _flows(self) -> IntegrationSpec:
        names = [f.name for f in self.flows]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"flows: duplicate flow name(s) {', '.join(dupes)}")
        for i, f in enumerate(self.flows):
            for side, known in (("source", KNOWN_SOURCES), ("target", KNOWN_TARGETS)):
                value = getattr(f, side)
                if value is not None and value not in known:
                    raise ValueError(f"flows.{i}.{side}: unknown {side} {value!r}; known: {', '.join(known)}")
            if f.settings_from is not None and f.settings_from not in names:
                raise ValueError(f"flows.{i}.settings_from: no flow {f.settings_from!r}; known: {', '.join(names)}")
        schedules: dict[str, str] = {}
        for dag_id, flows in self.dags().items():
            for f in flows:
                if schedules.setdefault(dag_id, f.schedule) != f.schedule:
                    raise ValueError(f"flows: DAG {dag_id} gets flows with different schedules; give each a dag_id")
        return self

    def source_of(self, flow: FlowSpec) -> str:
        return flow.source or self.source

    def target_of(self, flow: FlowSpec) -> str:
        return flow.target or self.target

    def flow(self, name: str) -> FlowSpec:
        for f in self.flows:
            if f.name == name:
                return f
        raise ConfigError(f"flow: {self.integration} has no flow {name!r}; known: {', '.join(self.flow_names)}")

    @property
    def flow_names(self) -> list[str]:
        return [f.name for f in self.flows]

    def dags(self) -> dict[str, list[FlowSpec]]:
        """DAG id → its flows: one DAG per schedule (or per explicit ``dag_id``)."""
        by_schedule: dict[str, list[FlowSpec]] = {}
        for f in self.flows:
            if f.dag_id is None:
                by_schedule.setdefault(f.schedule, []).append(f)
        out: dict[str, list[FlowSpec]] = {}
        single = len(by_schedule) == 1 and all(f.dag_id is None for f in self.flows)
        for flows in by_schedule.values():
            dag_id = self.integration if single else f"{self.integration}_{flows[0].name}"
            out.setdefault(dag_id, []).extend(flows)
        for f in self.flows:
            if f.dag_id is not None:
                out.setdefault(f.dag_id, []).append(f)
        return out

    def tags_for(self, flows: list[FlowSpec]) -> list[str]:
        base = ["tillflow"]
        for f in flows:
            base += [f"source:{self.source_of(f)}", f"target:{self.target_of(f)}", f"flow:{f.kind}"]
        return sorted(set(base + self.tags))

    @property
    def all_tags(self) -> list[str]:
        return self.tags_for(self.flows)


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
    #: per-flow settings (flow name → its kind's settings), validated by the flow kind
    flows: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_tz(v)

    @field_validator("run_time", "business_day_cutoff", mode="before")
    @classmethod
    def _hhmm(cls, v: Any) -> time:
        return _parse_hhmm(v)

    @field_validator("weekdays")
    @classmethod
    def _unique_days(cls, v: list[str]) -> list[str]:
        return sorted(set(v), key=WEEKDAYS.index)

    def check_against(self, spec: IntegrationSpec) -> AccountSettings:
        """Apply the integration's own limits per flow (lookback bounds, earliest run time, a run time
        on a tick) and each flow kind's own settings (a setting a flow needs is refused when missing)."""
        unknown = sorted(set(self.flows) - set(spec.flow_names))
        if unknown:
            raise ConfigError(
                f"flows: {spec.integration} has no flow {', '.join(unknown)}; known: {', '.join(spec.flow_names)}"
            )
        for flow in spec.flows:
            lb = flow.lookback_days
            if not lb.min <= self.lookback_days <= lb.max:
                raise ConfigError(
                    f"lookback_days: must be between {lb.min} and {lb.max} for {spec.integration} "
                    f"flow {flow.name}, got {self.lookback_days}"
                )
            if flow.due == "account_run_time":
                if self.run_time < flow.earliest_run_time:
                    raise ConfigError(
                        f"run_time: {spec.integration} runs at {flow.earliest_run_time:%H:%M} at the earliest, "
                        f"got {self.run_time:%H:%M}"
                    )
                self._check_on_a_tick(spec, flow)
            from tillflow.flows import get_kind

            get_kind(flow.kind).check_settings(self.flows.get(flow.settings_key, {}), flow_name=flow.settings_key)
        return self

    def _check_on_a_tick(self, spec: IntegrationSpec, flow: FlowSpec) -> None:
        """The account's run time, in its own timezone, must fall on one of the DAG's ticks (winter and summer)."""
        from croniter import croniter

        for day in (date(2026, 1, 15), date(2026, 7, 15)):
            local = datetime.combine(day, self.run_time, tzinfo=ZoneInfo(self.timezone))
            at_dag = local.astimezone(ZoneInfo(spec.timezone))
            if not croniter.match(flow.schedule, at_dag.replace(tzinfo=None)):
                raise ConfigError(
                    f"run_time: {self.run_time:%H:%M} {self.timezone} is {at_dag:%H:%M} {spec.timezone} "
                    f"on {day}, when {spec.integration} does not tick ({flow.schedule})"
                )

    def pause_reasons(self, spec: IntegrationSpec) -> dict[str, str]:
        """Per flow of ``spec``: why it does not run for this account (``""``: it runs) — the account is paused,
        or the flow is switched off in its settings (``flows.<flow>.enabled: false``)."""
        if not self.active:
            return {f.name: "account is paused" for f in spec.flows}
        return {
            f.name: "flow is off for this account" if (self.flows.get(f.settings_key) or {}).get("enabled") is False
            else ""
            for f in spec.flows
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        if not data.get("flows"):
            data.pop("flows", None)
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
