"""The Pennylane stand-in: OAuth with rotation, strict validation, cursor paging, rate limit, lost answers."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from sandbox.pennylane import RATE_LIMIT, PennylaneApp
from sandbox.server import _Server

COMPANY = "acme"
API = "/api/external/v2"


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
    app, url = server
    app.reset()
    return app, url


def _token(url: str, refresh: str = f"prt-{COMPANY}", client_id: str = "app") -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id}
    return requests.post(f"{url}/oauth/token", data=form, timeout=5)


class Api:
    def __init__(self, url: str, company: str = COMPANY):
        self.url = url
        self.token = _token(url, f"prt-{company}").json()["access_token"]
        self.ids: dict[tuple[str, str], int] = {}  # looked up once: the stand-in's rate limit counts

    def get(self, path: str, **params) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.get(f"{self.url}{API}{path}", params=params, headers=headers, timeout=5)

    def post(self, path: str, body) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        return requests.post(f"{self.url}{API}{path}", data=json.dumps(body), headers=headers, timeout=5)

    def account(self, number: str) -> int:
        if ("account", number) not in self.ids:
            flt = json.dumps([{"field": "number", "operator": "eq", "value": number}])
            self.ids["account", number] = self.get("/ledger_accounts", filter=flt).json()["items"][0]["id"]
        return self.ids["account", number]

    def journal(self, code: str) -> int:
        if ("journal", code) not in self.ids:
            flt = json.dumps([{"field": "code", "operator": "eq", "value": code}])
            self.ids["journal", code] = self.get("/journals", filter=flt).json()["items"][0]["id"]
        return self.ids["journal", code]

    def entry(self, **over) -> dict:
        body = {
            "date": "2026-03-02",
            "label": "Ventes du jour",
            "journal_id": self.journal("VT"),
            "currency": "EUR",
            "piece_number": "acct:order:1:r1",
            "ledger_entry_lines": [
                {"debit": "120.00", "credit": "0.00", "ledger_account_id": self.account("530000"), "label": "Caisse"},
                {"debit": "0.00", "credit": "100.00", "ledger_account_id": self.account("707000"), "label": "HT"},
                {"debit": "0.00", "credit": "20.00", "ledger_account_id": self.account("445710"), "label": "TVA"},
            ],
        }
        body.update(over)
        return body


def _details(resp: requests.Response) -> dict[str, str]:
    return {d["field"]: d["message"] for d in resp.json()["details"]}


def test_oauth_rotates_refresh_tokens_and_never_echoes_them(pl):
    _, url = pl
    first = _token(url).json()
    assert first["expires_in"] == 86400 and first["token_type"] == "Bearer"
    assert first["refresh_token"] != f"prt-{COMPANY}"
    second = _token(url, first["refresh_token"])
    assert second.status_code == 200
    reused = _token(url, first["refresh_token"])  # spent by the rotation
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert first["refresh_token"] not in reused.text
    assert _token(url, "nope").status_code == 400
    assert _token(url, client_id="").status_code == 401
    bad_grant = requests.post(f"{url}/oauth/token", data={"grant_type": "password"}, timeout=5)
    assert bad_grant.json()["error"] == "unsupported_grant_type"


def test_api_needs_a_valid_bearer_token_and_me_names_the_company(pl):
    _, url = pl
    assert requests.get(f"{url}{API}/me", timeout=5).status_code == 401
    assert requests.get(f"{url}{API}/me", headers={"Authorization": "Bearer x"}, timeout=5).status_code == 401
    api = Api(url)
    me = api.get("/me")
    assert me.status_code == 200 and me.json()["company"]["name"] == COMPANY
    assert me.headers["ratelimit-limit"] == "25" and int(me.headers["ratelimit-remaining"]) == 24
    requests.post(f"{url}/_sandbox/tokens/expire", json={}, timeout=5)
    assert api.get("/me").status_code == 401


def test_entry_created_with_string_amounts_and_read_back(pl):
    _, url = pl
    api = Api(url)
    resp = api.post("/ledger_entries", api.entry())
    assert resp.status_code == 201, resp.text
    entry = resp.json()
    assert entry["piece_number"] == "acct:order:1:r1" and entry["journal"]["id"] == api.journal("VT")
    assert [(line["debit"], line["credit"]) for line in entry["ledger_entry_lines"]] == [
        ("120.00", "0.00"),
        ("0.00", "100.00"),
        ("0.00", "20.00"),
    ]
    assert api.get(f"/ledger_entries/{entry['id']}").json()["ledger_entry_lines"][0]["ledger_account"]["number"] == (
        "530000"
    )
    balance = requests.get(f"{url}/_sandbox/companies/{COMPANY}/trial_balance", timeout=5).json()
    assert balance["accounts"]["530000"] == {"debit": "120.00", "credit": "0.00", "balance": "120.00"}
    assert balance["total_debit"] == balance["total_credit"] == "120.00"


def test_unbalanced_lines_are_422(pl):
    _, url = pl
    api = Api(url)
    body = api.entry()
    body["ledger_entry_lines"][0]["debit"] = "119.99"
    resp = api.post("/ledger_entries", body)
    assert resp.status_code == 422
    assert "not balanced" in _details(resp)["ledger_entry_lines"]
    assert resp.json()["status"] == 422 and "119.99" in resp.json()["error"]


@pytest.mark.parametrize(
    ("value", "wanted"),
    [(120, "must be a string"), ("120", "two decimals"), ("120.0", "two decimals"), ("-1.00", "non-negative")],
)
def test_amounts_must_be_two_decimal_strings(pl, value, wanted):
    _, url = pl
    api = Api(url)
    body = api.entry()
    body["ledger_entry_lines"][0]["debit"] = value
    resp = api.post("/ledger_entries", body)
    assert resp.status_code == 422
    assert wanted in _details(resp)["ledger_entry_lines[0].debit"]


def test_missing_fields_unknown_ids_and_unknown_fields_are_named(pl):
    _, url = pl
    api = Api(url)
    body = api.entry(journal_id=999999, extra="x")
    del body["date"]
    body["ledger_entry_lines"][1]["ledger_account_id"] = 424242
    del body["ledger_entry_lines"][2]["credit"]
    details = _details(api.post("/ledger_entries", body))
    assert details["date"] == "is missing"
    assert "does not exist" in details["journal_id"]
    assert "does not exist" in details["ledger_entry_lines[1].ledger_account_id"]
    assert details["ledger_entry_lines[2].credit"] == "is missing"
    assert details["extra"] == "is not a known field"
    assert api.post("/ledger_entries", api.entry(journal_id="1")).status_code == 422
    assert api.post("/ledger_entries", [1]).status_code == 400
    assert requests.get(f"{url}/_sandbox/companies/{COMPANY}", timeout=5).json()["company"]["entries"] == []


def test_journals_and_accounts_are_created_once(pl):
    _, url = pl
    api = Api(url)
    made = api.post("/journals", {"code": "CA1", "label": "Caisse 1"})
    assert made.status_code == 201 and made.json()["code"] == "CA1"
    assert _details(api.post("/journals", {"code": "CA1", "label": "x"}))["code"] == "has already been taken"
    assert "2 to 5" in _details(api.post("/journals", {"code": "caisse-1", "label": "x"}))["code"]
    acct = api.post("/ledger_accounts", {"number": "512100", "label": "Banque 2", "vat_rate": "FR_200"})
    assert acct.status_code == 201
    assert _details(api.post("/ledger_accounts", {"number": "512100", "label": "x"}))["number"] == (
        "has already been taken"
    )
    flt = json.dumps([{"field": "number", "operator": "start_with", "value": "512"}])
    assert sorted(a["number"] for a in api.get("/ledger_accounts", filter=flt).json()["items"]) == ["512000", "512100"]
    assert (
        api.get("/ledger_accounts", filter=json.dumps([{"field": "label", "operator": "eq", "value": "x"}])).status_code
        == 400
    )


def test_customer_external_reference_is_unique_and_has_its_own_account(pl):
    _, url = pl
    api = Api(url)
    body = {
        "name": "Dupont SARL",
        "emails": ["compta@dupont.example"],
        "external_reference": "kash-c-17",
        "billing_address": {"address": "", "postal_code": "", "city": "", "country_alpha2": "FR"},
    }
    made = api.post("/company_customers", body)
    assert made.status_code == 201, made.text
    account_id = made.json()["ledger_account"]["id"]
    again = api.post("/company_customers", {**body, "name": "Other"})
    assert again.status_code == 422 and _details(again)["external_reference"] == "has already been taken"
    flt = json.dumps([{"field": "external_reference", "operator": "eq", "value": "kash-c-17"}])
    found = api.get("/customers", filter=flt).json()["items"]
    assert [(c["name"], c["ledger_account"]["id"]) for c in found] == [("Dupont SARL", account_id)]
    company = requests.get(f"{url}/_sandbox/companies/{COMPANY}", timeout=5).json()["company"]
    assert company["customers"][0]["ledger_account_number"].startswith("411")
    assert _details(api.post("/company_customers", {"name": "No address"}))["billing_address"] == "is missing"


def test_entries_are_cursor_paged_and_filtered_on_journal_and_date_only(pl):
    _, url = pl
    api = Api(url)
    for i in range(5):
        assert api.post("/ledger_entries", api.entry(piece_number=f"p{i}")).status_code == 201
    api.post("/ledger_entries", api.entry(piece_number="other-day", date="2026-03-03"))
    flt = json.dumps(
        [
            {"field": "journal_id", "operator": "eq", "value": api.journal("VT")},
            {"field": "date", "operator": "eq", "value": "2026-03-02"},
        ]
    )
    seen, cursor = [], None
    while True:
        page = api.get("/ledger_entries", filter=flt, limit=2, **({"cursor": cursor} if cursor else {})).json()
        assert set(page) == {"items", "has_more", "next_cursor"}
        seen += [e["piece_number"] for e in page["items"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == ["p4", "p3", "p2", "p1", "p0"]  # default sort -id
    piece = json.dumps([{"field": "piece_number", "operator": "eq", "value": "p1"}])
    assert api.get("/ledger_entries", filter=piece).status_code == 400
    assert api.get("/ledger_entries", limit=101).status_code == 400
    assert api.get("/ledger_entries", cursor="garbage").status_code == 400
    assert api.get("/ledger_entries", page=2).status_code == 400


def test_rate_limit_is_25_per_5_seconds_per_token_with_headers(pl):
    _, url = pl
    api = Api(url)
    statuses = [api.get("/me") for _ in range(RATE_LIMIT)]
    assert all(r.status_code == 200 for r in statuses)
    assert statuses[-1].headers["ratelimit-remaining"] == "0"
    refused = api.get("/me")
    assert refused.status_code == 429
    assert refused.text.startswith("Rate limit exceeded. Please retry in")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "25" and refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) > 1_700_000_000  # a Unix timestamp
    assert Api(url, "other").get("/me").status_code == 200  # another token has its own window


def test_a_lost_answer_still_creates_the_entry(pl):
    _, url = pl
    api = Api(url)
    requests.post(f"{url}/_sandbox/lose", json={"count": 1, "paths": [f"{API}/ledger_entries"]}, timeout=5)
    assert api.post("/journals", {"code": "CA2", "label": "x"}).status_code == 201  # another path: answered
    lost = api.post("/ledger_entries", api.entry(piece_number="lost-1"))
    assert lost.status_code == 504
    entries = requests.get(f"{url}/_sandbox/companies/{COMPANY}", timeout=5).json()["company"]["entries"]
    assert [e["piece_number"] for e in entries] == ["lost-1"]
    assert requests.get(f"{url}/_sandbox/lose", timeout=5).json() == {
        "count": 0,
        "paths": [f"{API}/ledger_entries"],
        "lost": 1,
    }
    assert api.post("/ledger_entries", api.entry(piece_number="next")).status_code == 201


def test_state_lists_companies(pl):
    _, url = pl
    Api(url).get("/me")
    state = requests.get(f"{url}/_sandbox/state", timeout=5).json()
    assert COMPANY in state["companies"]
    assert {j["code"] for j in state["companies"][COMPANY]["journals"]} >= {"VT", "HA", "BQ", "OD"}
