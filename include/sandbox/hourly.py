"""Stand-ins for Kassatellen (POS, hourly revenue per revenue group) and Eitje (workforce, revenue write).

Implements the Kassatellen and Eitje sections of ``include/sandbox/CONTRACT.md``. Standard library only,
nothing from ``tillflow``. Started with the other stand-ins by :class:`sandbox.server.Sandbox`.

Kassatellen's login is its documented one (``POST /auth/login`` → JWT, ``expiresIn`` 3600); its revenue
endpoints are not public, so the contract here is tillflow's own. Eitje's open API reads revenue
(``revenue_days``) but publishes no write; the write contract here is *assumed* and documented as such.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import ClassVar
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from sandbox.server import (
    CENT,
    BadRequest,
    Number,
    Request,
    Response,
    VendorApp,
    json_numbers_response,
    json_response,
    json_type,
    parse_date,
    shown,
)

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
_INSTANT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})$")


def parse_instant(value, name: str) -> dt.datetime:
    """An ISO 8601 instant *with* its offset (``Z`` or ``±hh:mm``), whole hours only → aware UTC."""
    if not isinstance(value, str) or not _INSTANT_RE.match(value):
        raise BadRequest(
            f"'{name}' must be an ISO 8601 instant with an offset, e.g. 2026-10-25T01:00:00Z; got {value!r}"
        )
    try:
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"'{name}' is not a valid instant: {value!r}") from None
    if ts.minute or ts.second:
        raise BadRequest(f"'{name}' must fall on a whole hour, got {value!r}")
    return ts.astimezone(UTC)


def iso_z(ts: dt.datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------- Kassatellen

KASSATELLEN_TZ = "Europe/Amsterdam"
KASSATELLEN_TOKEN_TTL = 3600
KASSATELLEN_MAX_HOURS = 32 * 24
#: the venue's revenue groups; 13 (gift cards) never sells — it still has to be mapped or marked inactive
KASSATELLEN_GROUPS = [
    {"id": 11, "name": "Keuken", "vatRate": 9},
    {"id": 12, "name": "Dranken", "vatRate": 21},
    {"id": 13, "name": "Cadeaubonnen", "vatRate": 0},
]
#: local opening hours with sales: 11:00 to 03:00 (after midnight: the previous business day; the repeated
#: autumn 02:00 sells twice)
KASSATELLEN_OPEN_HOURS = frozenset(range(11, 24)) | {0, 1, 2}
_KT_PARAMS = frozenset({"from", "to"})


def kassatellen_amount(user: str, group: int, hour_start: dt.datetime) -> Decimal:
    """Deterministic revenue incl. VAT of one group in one hour (UTC instant); 0 outside opening hours."""
    local = hour_start.astimezone(ZoneInfo(KASSATELLEN_TZ))
    if group == 13 or local.hour not in KASSATELLEN_OPEN_HOURS:
        return Decimal(0)
    digest = hashlib.sha256(f"{user}|{group}|{iso_z(hour_start)}".encode()).hexdigest()
    return Decimal(int(digest[:8], 16) % 40001) / 100


def kassatellen_excl(incl: Decimal, group: int) -> Decimal:
    rate = next((g["vatRate"] for g in KASSATELLEN_GROUPS if g["id"] == group), 21)
    return (incl * 100 / (100 + rate)).quantize(CENT, rounding=ROUND_HALF_UP)


class KassatellenApp(VendorApp):
    """``POST /auth/login`` → JWT; ``GET /api/v1/revenue-groups``; ``GET /api/v1/revenue/hourly``."""

    name = "kassatellen"

    def __init__(self, latency_ms: float = 0, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.key = secrets.token_bytes(32)
        super().__init__(latency_ms)

    def reset_state(self) -> None:
        self.users: dict[str, dict] = {}
        self.token_ttl = KASSATELLEN_TOKEN_TTL
        self.not_before = 0.0  # tokens issued before this (epoch seconds) are expired
        self.logins = 0

    def _user(self, name: str) -> dict:
        return self.users.setdefault(name, {"extra_groups": [], "bad_rows": [], "stray_rows": [], "bump": {}})

    def state(self) -> dict:
        return {"users": self.users, "token_ttl": self.token_ttl, "logins": self.logins}

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        return json_response(status, {"success": False, "message": message, **extra}, headers)

    # -- JWT (HS256), as the real login returns one
    def _jwt(self, user: str) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = self.clock()
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64(
            json.dumps({"sub": user, "iat": now, "exp": now + self.token_ttl, "jti": secrets.token_hex(8)}).encode()
        )
        sig = b64(hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{sig}"

    def _authenticate(self, req: Request) -> tuple[str | None, str]:
        auth = req.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None, "missing Bearer token"
        token = auth[7:].strip()
        try:
            header, payload, sig = token.split(".")
            want = (
                base64.urlsafe_b64encode(hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
                .rstrip(b"=")
                .decode()
            )
            if not hmac.compare_digest(sig, want):
                return None, "invalid token"
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, TypeError):
            return None, "invalid token"
        now = self.clock()
        if claims["exp"] <= now or claims["iat"] < self.not_before:
            return None, "jwt expired"
        return claims["sub"], ""

    def _login(self, req: Request) -> Response:
        if req.method != "POST":
            return self.error(405, "use POST")
        if "application/json" not in (req.headers.get("Content-Type") or ""):
            return self.error(415, "Content-Type must be application/json")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object {username, password}")
        for field in ("username", "password"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise BadRequest(f"'{field}' is required (a string)")
        user, password = body["username"], body["password"]
        if not secrets.compare_digest(password.encode(), f"pw-{user}".encode()):
            return self.error(401, "Invalid username or password")
        with self.lock:
            self.logins += 1
            self._user(user)
        return json_response(
            200,
            {
                "success": True,
                "data": {"accessToken": self._jwt(user), "tokenType": "Bearer", "expiresIn": self.token_ttl},
            },
        )

    def groups_for(self, user: str) -> list[dict]:
        with self.lock:
            extra = list(self._user(user)["extra_groups"])
        return [{**g, "active": True} for g in KASSATELLEN_GROUPS] + [{**g, "active": True} for g in extra]

    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path == "/auth/login":
            return self._login(req)
        if path not in ("/api/v1/revenue-groups", "/api/v1/revenue/hourly"):
            return self.error(404, f"no such endpoint: {req.path}")
        if req.method != "GET":
            return self.error(405, "use GET")
        user, why = self._authenticate(req)
        if user is None:
            return self.error(401, why, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if path == "/api/v1/revenue-groups":
            if req.query:
                raise BadRequest(f"unknown parameter(s) {sorted(req.query)}; allowed: none")
            return json_response(200, {"success": True, "data": self.groups_for(user)})
        return self._revenue(req, user)

    def _revenue(self, req: Request, user: str) -> Response:
        unknown = sorted(set(req.query) - _KT_PARAMS)
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; allowed: {sorted(_KT_PARAMS)}")
        for name in ("from", "to"):
            if req.arg(name) is None:
                raise BadRequest(f"parameter '{name}' is required (an ISO 8601 instant with offset)")
        start, end = parse_instant(req.arg("from"), "from"), parse_instant(req.arg("to"), "to")
        if end <= start:
            raise BadRequest(f"parameter 'to' ({req.arg('to')}) must be after 'from' ({req.arg('from')})")
        hours = int((end - start) / HOUR)
        if hours > KASSATELLEN_MAX_HOURS:
            raise BadRequest(f"'from'/'to' span {hours} hours; at most {KASSATELLEN_MAX_HOURS} per request")
        groups = [g["id"] for g in self.groups_for(user)]
        with self.lock:
            u = self._user(user)
            bump = dict(u["bump"])
            bad = [r for r in u["bad_rows"] if start <= parse_instant(r["hourStart"], "hourStart") < end]
            bad += u["stray_rows"]  # a POS that ignores the asked span: these come with every answer
        rows = []
        now = dt.datetime.fromtimestamp(self.clock(), UTC)
        for i in range(hours):
            hour = start + i * HOUR
            if hour + HOUR > now:
                break  # no sales in an hour that has not ended yet
            for gid in groups:
                incl = kassatellen_amount(user, gid, hour) + bump.get((gid, hour), Decimal(0))
                if incl == 0:
                    continue
                rows.append(
                    {
                        "hourStart": iso_z(hour),
                        "revenueGroupId": gid,
                        "amountInclVat": Number(incl),
                        "amountExclVat": Number(kassatellen_excl(incl, gid)),
                    }
                )
        for r in bad:  # injected by a test: a negative or non-numeric amount, as a broken POS would send
            rows.append(
                {
                    k: (
                        Number(Decimal(str(v)))
                        if k.startswith("amount") and isinstance(v, int | Decimal) and not isinstance(v, bool)
                        else v
                    )
                    for k, v in r.items()
                }
            )
        return json_numbers_response(200, {"success": True, "data": rows})

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if sub == "tokens/expire":  # every token issued so far expires now (a run that outlives its token)
            if req.method != "POST":
                return self.error(405, "use POST")
            with self.lock:
                self.not_before = self.clock() + 1e-6
            return json_response(200, {"ok": True})
        if sub == "auth":
            body = req.json()
            ttl = body.get("token_ttl") if isinstance(body, dict) else None
            if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 86400:
                raise BadRequest("'token_ttl' must be an integer number of seconds (1..86400)")
            with self.lock:
                self.token_ttl = ttl
            return json_response(200, {"token_ttl": ttl})
        if not sub.startswith("users/"):
            return None
        user = unquote(sub[len("users/") :])
        if req.method == "GET":
            with self.lock:
                return json_response(200, _jsonable(self._user(user)))
        body = req.json()
        if not isinstance(body, dict) or set(body) - {"extra_groups", "bad_rows", "stray_rows", "bump"}:
            raise BadRequest("body: an object with extra_groups, bad_rows, stray_rows and/or bump")
        with self.lock:
            u = self._user(user)
            if "extra_groups" in body:
                groups = body["extra_groups"]
                if not isinstance(groups, list) or not all(
                    isinstance(g, dict) and isinstance(g.get("id"), int) and isinstance(g.get("name"), str)
                    for g in groups
                ):
                    raise BadRequest("'extra_groups': a list of {id: integer, name: string}")
                u["extra_groups"] = [
                    {"id": g["id"], "name": g["name"], "vatRate": g.get("vatRate", 21)} for g in groups
                ]
            for name in ("bad_rows", "stray_rows"):
                if name in body:
                    if not isinstance(body[name], list) or not all(isinstance(r, dict) for r in body[name]):
                        raise BadRequest(f"'{name}': a list of rows")
                    for r in body[name]:
                        parse_instant(r.get("hourStart"), f"{name}.hourStart")
                    u[name] = list(body[name])
            if "bump" in body:  # [{"group": 11, "hourStart": "...Z", "amount": "1.00"}]: a late POS correction
                for b in body["bump"]:
                    key = (int(b["group"]), parse_instant(b["hourStart"], "bump.hourStart"))
                    u["bump"][key] = u["bump"].get(key, Decimal(0)) + Decimal(str(b["amount"]))
            return json_response(200, _jsonable(u))


def _jsonable(value):
    if isinstance(value, dict):
        return {(f"{k[0]}@{iso_z(k[1])}" if isinstance(k, tuple) else str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


# --------------------------------------------------------------------------------------------- Eitje

EITJE_HEADERS = ("Partner-Username", "Partner-Password", "Api-Username", "Api-Password")
EITJE_GROUPS = [{"id": 501, "name": "Keuken"}, {"id": 502, "name": "Bar"}, {"id": 503, "name": "Overig"}]
EITJE_MAX_DAYS = 93
_EITJE_WRITE_FIELDS = {"date", "hour_start", "amount"}
_TWO_DP = Decimal("0.01")


class EitjeApp(VendorApp):
    """Eitje open API (``/open_api``): four credential headers; revenue groups; the assumed revenue write."""

    name = "eitje"
    ERROR_CODES: ClassVar[dict[int, str]] = {
        401: "unauthorized",
        404: "not_found",
        415: "unsupported_media_type",
        422: "unprocessable_entity",
        429: "too_many_requests",
    }

    def reset_state(self) -> None:
        self.environments: dict[str, dict] = {}
        self.next_id = 1

    def _env(self, api_user: str) -> dict:
        return self.environments.setdefault(api_user, {"groups": [dict(g) for g in EITJE_GROUPS], "revenue": {}})

    def state(self) -> dict:
        def plain(rec: dict) -> dict:
            out = self._out(rec)
            return out | {"amount": format(out["amount"].value, "f")}  # the control endpoint answers plain JSON

        return {
            "environments": {
                name: {"groups": env["groups"], "revenue": [plain(r) for r in env["revenue"].values()]}
                for name, env in sorted(self.environments.items())
            }
        }

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        code = self.ERROR_CODES.get(status, "server_error" if status >= 500 else "bad_request")
        return json_response(status, {"error": code, "message": message, **extra}, headers)

    @staticmethod
    def _out(rec: dict) -> dict:
        return {
            "id": rec["id"],
            "revenue_group_id": rec["group"],
            "date": rec["date"].isoformat(),
            "hour_start": rec["hour_text"],
            "amount": Number(rec["amount"]),
            "updated_count": rec["updates"],
        }

    def _authenticate(self, req: Request) -> str | None:
        values = {h: (req.headers.get(h) or "").strip() for h in EITJE_HEADERS}
        if not all(values.values()):
            return None
        if not secrets.compare_digest(values["Partner-Password"].encode(), f"pp-{values['Partner-Username']}".encode()):
            return None
        if not secrets.compare_digest(values["Api-Password"].encode(), f"pw-{values['Api-Username']}".encode()):
            return None
        return values["Api-Username"]

    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if not path.startswith("/open_api/"):
            return self.error(404, f"no such endpoint: {req.path}")
        env_name = self._authenticate(req)
        if env_name is None:
            return self.error(
                401, "Partner-Username, Partner-Password, Api-Username and Api-Password are required and must be valid"
            )
        with self.lock:
            env = self._env(env_name)
        if path == "/open_api/revenue_groups" and req.method == "GET":
            return json_response(200, {"revenue_groups": env["groups"]})
        if path == "/open_api/revenue_groups/revenues" and req.method == "GET":
            return self._read(req, env)
        m = re.fullmatch(r"/open_api/revenue_groups/([^/]+)/revenues", path)
        if m and req.method == "PUT":
            return self._write(req, env, m.group(1))
        return self.error(404, f"no such endpoint: {req.method} {req.path}")

    def _read(self, req: Request, env: dict) -> Response:
        allowed = {"filters[start_date]", "filters[end_date]", "filters[revenue_group_id]"}
        unknown = sorted(set(req.query) - allowed)
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
        start = parse_date(req.arg("filters[start_date]"), "filters[start_date]")
        end = parse_date(req.arg("filters[end_date]"), "filters[end_date]")
        if end < start or (end - start).days + 1 > EITJE_MAX_DAYS:
            raise BadRequest(f"filters: end_date must be on or after start_date, at most {EITJE_MAX_DAYS} days")
        group = req.arg("filters[revenue_group_id]")
        with self.lock:
            recs = [
                self._out(r)
                for r in env["revenue"].values()
                if start <= r["date"] <= end and (group is None or str(r["group"]) == group)
            ]
        recs.sort(key=lambda r: (r["date"], r["revenue_group_id"], r["hour_start"] or ""))
        return json_numbers_response(200, {"revenues": recs})

    def _write(self, req: Request, env: dict, raw_group: str) -> Response:
        if "application/json" not in (req.headers.get("Content-Type") or ""):
            return self.error(415, "Content-Type must be application/json")
        if not raw_group.isdigit():
            return self.error(404, f"revenue group {raw_group!r} not found")
        group = int(raw_group)
        if group not in {g["id"] for g in env["groups"]}:
            return self.error(404, f"revenue group {group} not found")
        body = req.json()
        if not isinstance(body, dict):
            return self.error(422, "body must be a JSON object {date, hour_start, amount}")
        problems = []
        unknown = sorted(set(body) - _EITJE_WRITE_FIELDS)
        if unknown:
            problems.append(f"unknown field(s) {unknown}")
        for field in ("date", "amount"):
            if field not in body:
                problems.append(f"'{field}' is required")
        if "hour_start" not in body:
            problems.append("'hour_start' is required (an ISO 8601 instant with offset, or null for the whole day)")
        amount = body.get("amount")
        if "amount" in body and (isinstance(amount, bool) or not isinstance(amount, int | Decimal)):
            problems.append(f"'amount' must be a JSON number, got {json_type(amount)} {shown(amount)}")
        elif isinstance(amount, Decimal) and amount != amount.quantize(_TWO_DP):
            problems.append(f"'amount' has more than 2 decimals: {shown(amount)}")
        day = None
        if "date" in body:
            try:
                day = parse_date(body["date"], "date")
            except BadRequest as exc:
                problems.append(str(exc))
        hour_text, hour = body.get("hour_start"), None
        if hour_text is not None:
            try:
                hour = parse_instant(hour_text, "hour_start")
            except BadRequest as exc:
                problems.append(str(exc))
        if hour is not None and day is not None:
            # the hour must lie in the business day (which may run past midnight): within date ± 1 day
            if not (
                dt.datetime.combine(day, dt.time(), UTC) - dt.timedelta(hours=14)
                <= hour
                < dt.datetime.combine(day, dt.time(), UTC) + dt.timedelta(hours=38)
            ):
                problems.append(f"'hour_start' {hour_text} does not lie in business day {day}")
        if problems:
            return self.error(422, "; ".join(problems))
        key = (group, hour) if hour is not None else (group, day)  # an hour is an instant: one record each
        with self.lock:
            rec = env["revenue"].get(key)
            created = rec is None
            if created:
                rec = {"id": self.next_id, "group": group, "date": day, "hour": hour, "updates": 0}
                self.next_id += 1
                env["revenue"][key] = rec
            else:
                rec["updates"] += 1
            rec["amount"] = Decimal(amount).quantize(_TWO_DP)
            rec["hour_text"] = None if hour is None else iso_z(hour)
            out = self._out(rec)
        return json_numbers_response(201 if created else 200, {"revenue": out})

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if not sub.startswith("environments/"):
            return None
        env_name = unquote(sub[len("environments/") :])
        body = req.json() if req.method == "POST" else {}
        with self.lock:
            env = self._env(env_name)
            if req.method == "POST":
                groups = body.get("groups") if isinstance(body, dict) else None
                if not isinstance(groups, list) or not all(
                    isinstance(g, dict) and isinstance(g.get("id"), int) and isinstance(g.get("name"), str)
                    for g in groups
                ):
                    raise BadRequest("'groups': a list of {id: integer, name: string}")
                env["groups"] = [{"id": g["id"], "name": g["name"]} for g in groups]
            return json_numbers_response(
                200, {"groups": env["groups"], "revenue": [self._out(r) for r in env["revenue"].values()]}
            )
