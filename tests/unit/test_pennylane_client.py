"""PennylaneClient against the Pennylane stand-in: references resolved once, exactly-once posting, find by piece
number, lost answers, 429, token rotation, masking and the shared rate limiter."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import requests
from sandbox.pennylane import PennylaneApp
from sandbox.server import _Server
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpPolicy
from tillflow.sources.base import ConnectionInfo
from tillflow.targets.pennylane import PennylaneClient

API = "/api/external/v2"
SECRET = "cs-very-secret-4242"
_companies = itertools.count(1)


@pytest.fixture(scope="module")
def server():
    app = PennylaneApp()
    srv = _Server(("127.0.0.1", 0), app)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def pl(server):
    """The stand-in, reset, and a company of this test's own (its connection's token store and limiter are
    process-wide: a fresh company gives a fresh connection)."""
    app, url = server
    app.reset()
    return app, url, f"co{next(_companies)}-{time.monotonic_ns()}"


def _client(url: str, company: str, **kwargs) -> PennylaneClient:
    conn = ConnectionInfo(
        conn_id="pennylane_test",
        host=f"{url}{API}",
        login="tillflow-app",
        password=f"prt-{company}",
        extra={"client_secret": SECRET},
    )
    return PennylaneClient.from_connection(conn, policy=kwargs.pop("policy", HttpPolicy(max_attempts=4)), **kwargs)


def _company(url: str, company: str) -> dict:
    return requests.get(f"{url}/_sandbox/companies/{company}", timeout=5).json()["company"]


def _log(url: str, path: str = API) -> list[dict]:
    return requests.get(f"{url}/_sandbox/requests", params={"path": path}, timeout=5).json()


def _payload(n: int = 1, *, journal: str = "CA1", day: str = "2026-03-02", customer: bool = True) -> dict:
    lines = [
        {"account": "530000", "label": "Espèces", "debit": "60.00", "credit": "0.00", "customer": None},
        {"account": "706000", "label": "Ventes HT", "debit": "0.00", "credit": "100.00", "customer": None},
        {"account": "445712", "label": "TVA 20 %", "debit": "0.00", "credit": "20.00", "customer": None},
    ]
    if customer:
        lines.append({"account": "411", "label": "Dupont", "debit": "60.00", "credit": "0.00", "customer": "c-17"})
    else:
        lines[0]["debit"] = "120.00"
    return {
        "event_key": f"order:{n}",
        "date": day,
        "label": f"Commande {n}",
        "journal": journal,
        "currency": "EUR",
        "lines": lines,
        "customer": {"external_reference": "c-17", "name": "Dupont SARL", "email": "compta@dupont.example"}
        if customer
        else None,
    }


def test_from_connection_checks_fields_and_defaults():
    with pytest.raises(ConfigError, match="login"):
        PennylaneClient.from_connection(ConnectionInfo(conn_id="c", password="x"))
    with pytest.raises(ConfigError, match="password"):
        PennylaneClient.from_connection(ConnectionInfo(conn_id="c", login="app"))
    with pytest.raises(ConfigError, match="country_alpha2"):
        PennylaneClient.from_connection(
            ConnectionInfo(conn_id="c", login="a", password="p", extra={"country_alpha2": "France"})
        )
    client = PennylaneClient.from_connection(ConnectionInfo(conn_id="c", login="app", password="rt"))
    assert client.http.base_url == "https://app.pennylane.com/api/external/v2"
    assert client.token_url == "https://app.pennylane.com/oauth/token"
    assert (client.name, client.mapping_kind, client.flows) == ("pennylane", "ledger_account", ("ledger",))
    assert client.http.limiter.rate == pytest.approx(4.7) and client.http.limiter.burst == 1
    with pytest.raises(NotImplementedError, match="outbox"):
        client.deliver("ledger", None)


def test_connection_and_reference_data(pl):
    _, url, company = pl
    client = _client(url, company)
    journals = client.test_connection()
    assert {j.key for j in journals} >= {"VT", "HA", "BQ", "OD"}
    ref = client.reference_data()
    assert set(ref) == {"journal", "ledger_account"}
    assert "512000" in {a.key for a in ref["ledger_account"]}


def test_entry_posted_with_references_created_once_and_reused(pl):
    _, url, company = pl
    client = _client(url, company)
    first = client.post(_payload(1), "acct:order:1:r1")
    second = client.post(_payload(2), "acct:order:2:r1")
    assert first != second
    posts = [e["path"] for e in _log(url) if e["method"] == "POST"]
    assert posts.count(f"{API}/journals") == 1
    assert posts.count(f"{API}/company_customers") == 1
    assert posts.count(f"{API}/ledger_accounts") == 1  # 445712; 530000 and 706000 exist
    assert posts.count(f"{API}/ledger_entries") == 2
    # a new instance (cold cache) finds them all instead of creating them again
    _client(url, company).post(_payload(3), "acct:order:3:r1")
    posts = [e["path"] for e in _log(url) if e["method"] == "POST"]
    assert posts.count(f"{API}/journals") == posts.count(f"{API}/company_customers") == 1
    state = _company(url, company)
    assert [j["code"] for j in state["journals"]].count("CA1") == 1
    [customer] = state["customers"]
    assert customer["external_reference"] == "c-17" and customer["emails"] == ["compta@dupont.example"]
    entry = next(e for e in state["entries"] if e["id"] == int(first))
    assert entry["piece_number"] == "acct:order:1:r1" and entry["date"] == "2026-03-02"
    numbers = [
        (line["ledger_account"]["number"], line["debit"], line["credit"]) for line in entry["ledger_entry_lines"]
    ]
    assert numbers == [
        ("530000", "60.00", "0.00"),
        ("706000", "0.00", "100.00"),
        ("445712", "0.00", "20.00"),
        (customer["ledger_account_number"], "60.00", "0.00"),  # the customer's own account, not a shared 411
    ]
    balance = requests.get(f"{url}/_sandbox/companies/{company}/trial_balance", timeout=5).json()
    assert balance["accounts"]["706000"]["credit"] == "300.00"
    assert balance["total_debit"] == balance["total_credit"] == "360.00"


def test_a_vat_line_opens_its_account_with_pennylanes_vat_rate_code(pl):
    _, url, company = pl
    client = _client(url, company)
    payload = _payload(1, customer=False)
    payload["lines"][2] |= {"account": "445713", "vat_rate": "5.5"}
    payload["lines"][1]["account"] = "707055"  # a sales line: no rate, created without one
    client.post(payload, "acct:order:1:r1")
    accounts = {a["number"]: a for a in _company(url, company)["ledger_accounts"]}
    assert (accounts["445713"]["vat_rate"], accounts["445713"]["country_alpha2"]) == ("FR_55", "FR")
    assert (accounts["707055"]["vat_rate"], accounts["707055"]["country_alpha2"]) == (None, None)
    assert [client.vat_rate_code(r) for r in ("20", "10", "2.1", "8.5")] == ["FR_200", "FR_100", "FR_21", "FR_85"]
    payload["lines"][2] |= {"account": "445799", "vat_rate": "5.55"}
    posted = len(_log(url))
    with pytest.raises(ConfigError, match=r"acct:order:2:r1: line 2 vat_rate '5\.55' is not a percentage"):
        client.post(payload, "acct:order:2:r1")
    assert len(_log(url)) == posted  # refused before anything was sent


def test_find_by_piece_number_needs_the_payload(pl):
    _, url, company = pl
    client = _client(url, company)
    payload = _payload(1, customer=False)
    entry_id = client.post(payload, "acct:order:1:r1")
    client.post(_payload(2, customer=False), "acct:order:2:r1")
    client.post(_payload(3, customer=False, day="2026-03-03"), "acct:order:1:r1:rev")
    assert client.find("acct:order:1:r1", payload) == entry_id
    assert _client(url, company).find("acct:order:1:r1", payload) == entry_id  # cold cache
    assert client.find("acct:order:9:r1", payload) is None
    assert client.find("acct:order:1:r1:rev", payload) is None  # another day
    assert client.find("acct:order:1:r1", {**payload, "journal": "ZZ9"}) is None  # no such journal: never posted
    with pytest.raises(ConfigError, match="payload"):
        client.find("acct:order:1:r1")


def test_lost_answer_is_outcome_unknown_and_find_returns_the_entry(pl):
    _, url, company = pl
    client = _client(url, company)
    payload = _payload(1)
    requests.post(f"{url}/_sandbox/lose", json={"count": 1, "paths": [f"{API}/ledger_entries"]}, timeout=5)
    with pytest.raises(TransientError, match="outcome unknown"):
        client.post(payload, "acct:order:1:r1")
    [entry] = _company(url, company)["entries"]  # processed: the entry exists
    assert client.find("acct:order:1:r1", payload) == str(entry["id"])
    assert [e["status"] for e in _log(url, f"{API}/ledger_entries") if e["method"] == "POST"] == [504]


def test_lost_reference_create_is_not_outcome_unknown(pl):
    _, url, company = pl
    client = _client(url, company)
    requests.post(f"{url}/_sandbox/lose", json={"count": 1, "paths": [f"{API}/journals"]}, timeout=5)
    with pytest.raises(TransientError) as caught:
        client.post(_payload(1), "acct:order:1:r1")
    assert "outcome unknown" not in str(caught.value) and "not sent" in str(caught.value)
    assert _company(url, company)["entries"] == []
    client.post(_payload(1), "acct:order:1:r1")  # the journal created by the lost call is found, not doubled
    assert [j["code"] for j in _company(url, company)["journals"]].count("CA1") == 1


def test_unbalanced_or_malformed_entry_is_refused_locally(pl):
    _, url, company = pl
    client = _client(url, company)
    payload = _payload(1, customer=False)
    payload["lines"][0]["debit"] = "119.99"
    with pytest.raises(ConfigError, match=r"acct:order:1:r1 is not balanced: debit 119\.99 != credit 120\.00"):
        client.post(payload, "acct:order:1:r1")
    payload["lines"][0]["debit"] = "120.001"
    with pytest.raises(ConfigError, match="2 decimals"):
        client.post(payload, "acct:order:1:r1")
    assert _log(url) == []  # nothing was sent


def test_refused_entry_is_a_remote_error_naming_the_fields(pl):
    _, url, company = pl
    client = _client(url, company)
    payload = _payload(1, customer=False)
    payload["lines"].append({"account": "706000", "label": "rien", "debit": "0.00", "credit": "0.00"})
    with pytest.raises(RemoteError) as caught:
        client.post(payload, "acct:order:1:r1")
    assert caught.value.status == 422 and caught.value.permanent
    assert "acct:order:1:r1" in str(caught.value) and "ledger_entry_lines[3]" in str(caught.value)
    with pytest.raises(RemoteError, match="journal 'caisse-1'") as caught:
        client.post(_payload(2, journal="caisse-1", customer=False), "acct:order:2:r1")
    assert caught.value.status == 422


def test_429_is_waited_out(pl):
    _, url, company = pl
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    client = _client(url, company, sleep=sleep)
    client.post(_payload(1, customer=False), "acct:order:1:r1")  # references cached
    token = client.access_token()
    for _ in range(25):  # someone else uses the same token's budget
        requests.get(f"{url}{API}/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    entry_id = client.post(_payload(2, customer=False), "acct:order:2:r1")
    statuses = [e["status"] for e in _log(url, f"{API}/ledger_entries") if e["method"] == "POST"]
    assert statuses[0] == 201 and 429 in statuses and statuses[-1] == 201
    assert waits and all(w >= 1 for w in waits)  # retry-after, not an immediate retry
    assert len(_company(url, company)["entries"]) == 2 and entry_id


def test_refresh_token_rotation_and_401_refresh(pl):
    _, url, company = pl
    rotated: list[str] = []
    client = _client(url, company, on_refresh_token=rotated.append)
    client.test_connection()
    assert len(rotated) == 1 and rotated[0].startswith("prtr-")
    requests.post(f"{url}/_sandbox/tokens/expire", json={"company": company}, timeout=5)
    client.post(_payload(1, customer=False), "acct:order:1:r1")  # 401 → refresh with the rotated token
    assert len(rotated) == 2 and rotated[1] != rotated[0]
    # a second client of the same connection shares the newest refresh token (the seed's rotation is spent)
    _client(url, company).test_connection()
    assert len(_company(url, company)["entries"]) == 1


def test_secrets_never_in_messages(pl):
    _, url, company = pl
    conn = ConnectionInfo(
        conn_id="c", host=f"{url}{API}", login="app", password="bogus-refresh-token-77", extra={"client_secret": SECRET}
    )
    client = PennylaneClient.from_connection(conn, policy=HttpPolicy(max_attempts=1))
    with pytest.raises(AuthError) as caught:
        client.test_connection()
    assert "bogus-refresh-token-77" not in str(caught.value) and SECRET not in str(caught.value)
    good = _client(url, company)
    token = good.access_token()
    payload = _payload(1, journal="caisse-1", customer=False)
    with pytest.raises(RemoteError) as refused:
        good.post(payload, "acct:order:1:r1")
    text = str(refused.value)
    assert token not in text and SECRET not in text and f"prt-{company}" not in text


def test_limiter_keeps_30_quick_posts_under_the_limit(pl):
    _, url, company = pl
    client = _client(url, company, policy=HttpPolicy(max_attempts=1))  # a 429 would fail the post
    started = time.monotonic()
    ids = [client.post(_payload(n, customer=False), f"acct:order:{n}:r1") for n in range(30)]
    elapsed = time.monotonic() - started
    log = _log(url)
    assert len(set(ids)) == 30 and all(e["status"] != 429 for e in log)
    rate = (len(log) - 1) / (log[-1]["ts"] - log[0]["ts"])
    assert 4.5 <= rate <= 5.0, (rate, elapsed)  # ≥ 90 % of 25 per 5 s, never over it
    stamps = [e["ts"] for e in log]
    busiest = max(sum(1 for t in stamps if s <= t < s + 5) for s in stamps)
    assert 23 <= busiest <= 25  # the fullest 5-second window (sliding) uses the limit without passing it
