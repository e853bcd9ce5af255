"""The Visma eAccounting stand-in: OAuth rotation without grace, OData paging and the Meta envelope, required fields,
the 4010 rate-limit body, scopes and lost answers."""

from __future__ import annotations

import base64
import threading

import pytest
import requests
from sandbox.eaccounting import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, EaccountingApp
from sandbox.server import _Server

COMPANY = "acme"
API = "/v2"
CLIENT = ("tillflow-app", "cs-secret-1234")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server():
    clock = FakeClock()
    app = EaccountingApp(clock=clock)
    srv = _Server(("127.0.0.1", 0), app)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{srv.server_address[1]}", clock
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def ea(server):
    app, url, clock = server
    app.reset()
    return app, url, clock


def _token(url: str, refresh: str = f"ert-{COMPANY}", client=CLIENT, basic: bool = True) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh}
    headers = {}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
    else:
        form.update({"client_id": client[0], "client_secret": client[1]})
    return requests.post(f"{url}/connect/token", data=form, headers=headers, timeout=5)


class Api:
    def __init__(self, url: str, company: str = COMPANY):
        self.url = url
        self.token = _token(url, f"ert-{company}").json()["access_token"]

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(f"{self.url}{API}{path}", params=params, headers=self._headers(), timeout=5)

    def post(self, path: str, body) -> requests.Response:
        return requests.post(f"{self.url}{API}{path}", json=body, headers=self._headers(), timeout=5)

    def put(self, path: str, body) -> requests.Response:
        return requests.put(f"{self.url}{API}{path}", json=body, headers=self._headers(), timeout=5)

    def first(self, path: str) -> dict:
        return self.get(path).json()["Data"][0]


def _customer(api: Api, **over) -> dict:
    body = {
        "Name": "Jansen BV",
        "IsPrivatePerson": False,
        "IsActive": True,
        "TermsOfPaymentId": api.first("/termsofpayments")["Id"],
        "InvoiceCity": "Utrecht",
        "InvoicePostalCode": "3511 AA",
        "InvoiceCountryCode": "NL",
        "EmailAddress": "info@jansen.example",
    }
    body.update(over)
    return body


def _article(api: Api, number: str = "A-1", **over) -> dict:
    body = {
        "IsActive": True,
        "Number": number,
        "Name": f"Article {number}",
        "CodingId": api.first("/articleaccountcodings")["Id"],
        "UnitId": api.first("/units")["Id"],
        "NetPrice": 10.5,
    }
    body.update(over)
    return body


def _order(customer_id: str, article_id: str, **over) -> dict:
    body = {
        "Amount": 21.0,
        "CustomerId": customer_id,
        "CurrencyCode": "EUR",
        "VatAmount": 4.41,
        "RoundingsAmount": 0,
        "InvoiceCity": "Utrecht",
        "InvoiceCountryCode": "NL",
        "InvoiceCustomerName": "Jansen BV",
        "InvoicePostalCode": "3511 AA",
        "EuThirdParty": False,
        "CustomerIsPrivatePerson": False,
        "OrderDate": "2026-03-02",
        "Status": 1,
        "RotReducedInvoicingType": 0,
        "ReverseChargeOnConstructionServices": False,
        "YourReference": "tf-0001",
        "Rows": [
            {
                "LineNumber": 0,
                "ArticleId": article_id,
                "Quantity": 2,
                "UnitPrice": 10.5,
                "IsTextRow": False,
                "IsWorkCost": False,
                "EligibleForReverseChargeOnVat": False,
            }
        ],
    }
    body.update(over)
    return body


def test_refresh_tokens_rotate_and_a_used_one_is_invalid_grant_without_grace(ea):
    _, url, _ = ea
    first = _token(url)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "refresh_token", "scope"}
    assert body["expires_in"] == 3600 and body["token_type"] == "Bearer"
    assert body["scope"].split()[:3] == ["ea:api", "offline_access", "ea:sales"]
    # the seed token was spent: at once, no grace period
    again = _token(url)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert f"ert-{COMPANY}" not in again.text
    second = _token(url, body["refresh_token"], basic=False)  # client credentials in the form work too
    assert second.status_code == 200 and second.json()["refresh_token"] != body["refresh_token"]
    assert _token(url, body["refresh_token"]).json()["error"] == "invalid_grant"
    # a token is bound to its client; the client must authenticate
    third = second.json()["refresh_token"]
    assert _token(url, third, client=("other-app", "x1")).json()["error"] == "invalid_grant"
    assert _token(url, third, client=("tillflow-app", "")).status_code == 401
    assert _token(url, third).status_code == 200  # not spent by the refused attempts
    form = requests.post(f"{url}/connect/token", json={"grant_type": "refresh_token"}, timeout=5)
    assert form.status_code == 400 and form.json()["error"] == "invalid_request"


def test_api_needs_a_bearer_token_with_the_right_scope(ea):
    _, url, _ = ea
    resp = requests.get(f"{url}{API}/customers", timeout=5)
    assert resp.status_code == 401 and resp.json()["ErrorCode"] == 4005
    requests.post(f"{url}/_sandbox/scopes", json={"company": "salesonly", "scopes": ["ea:api", "ea:sales"]}, timeout=5)
    api = Api(url, "salesonly")
    assert api.get("/customers").status_code == 200
    denied = api.get("/vatcodes")
    assert denied.status_code == 403 and denied.json()["ErrorCode"] == 4006
    vat = Api(url).get("/vatcodes")
    assert vat.status_code == 200 and isinstance(vat.json(), list)  # not paged (Swagger: an array)
    assert {v["Code"] for v in vat.json()} == {"1a", "1b", "1e"}


def test_odata_paging_and_meta(ea):
    _, url, _ = ea
    api = Api(url)
    for i in range(7):
        assert api.post("/articles", _article(api, f"P-{i:02d}")).status_code == 201
    resp = api.get("/articles", **{"$page": 2, "$pagesize": 3})
    body = resp.json()
    assert set(body) == {"Meta", "Data"}
    meta = body["Meta"]
    assert {k: meta[k] for k in ("CurrentPage", "PageSize", "TotalNumberOfPages", "TotalNumberOfResults")} == {
        "CurrentPage": 2,
        "PageSize": 3,
        "TotalNumberOfPages": 3,
        "TotalNumberOfResults": 7,
    }
    assert meta["ServerTimeUtc"].endswith("Z")
    assert [a["Number"] for a in body["Data"]] == ["P-03", "P-04", "P-05"]
    assert api.get("/articles").json()["Meta"]["PageSize"] == DEFAULT_PAGE_SIZE
    assert api.get("/articles", **{"$page": 9}).json()["Data"] == []
    too_big = api.get("/articles", **{"$pagesize": MAX_PAGE_SIZE + 1})
    assert too_big.status_code == 400 and "$pagesize" in too_big.json()["DeveloperErrorMessage"]
    assert api.get("/articles", **{"$page": 0}).status_code == 400
    assert api.get("/articles", limit=5).status_code == 400  # not an option of this API
    found = api.get("/articles", **{"$filter": "Number eq 'P-04'"}).json()
    assert [a["Number"] for a in found["Data"]] == ["P-04"] and found["Meta"]["TotalNumberOfResults"] == 1
    both = api.get("/articles", **{"$filter": "(Number eq 'P-01' or Number eq 'P-06') and IsActive eq true"})
    assert [a["Number"] for a in both.json()["Data"]] == ["P-01", "P-06"]
    desc = api.get("/articles", **{"$orderby": "Number desc", "$pagesize": 2}).json()["Data"]
    assert [a["Number"] for a in desc] == ["P-06", "P-05"]
    bad = api.get("/articles", **{"$filter": "Nummer eq 'P-04'"})
    assert bad.status_code == 400 and "Nummer" in bad.json()["DeveloperErrorMessage"]
    assert api.get("/articles", **{"$filter": "Number eq"}).status_code == 400


def test_required_fields_and_wrong_types_are_400_naming_each_field(ea):
    _, url, _ = ea
    api = Api(url)
    resp = api.post("/customers", {"Name": "X", "IsPrivatePerson": "no", "EmailAddres": "a@b.example"})
    assert resp.status_code == 400
    body = resp.json()
    assert body["ErrorCode"] == 2000 and set(body) == {"ErrorCode", "DeveloperErrorMessage", "ErrorId"}
    message = body["DeveloperErrorMessage"]
    for field in ("IsPrivatePerson", "IsActive", "TermsOfPaymentId", "InvoiceCity", "InvoicePostalCode", "EmailAddres"):
        assert field in message, field
    assert "The IsActive field is required." in message
    assert "InvoiceCountryCode" not in message  # not required by Visma
    # an unknown reference is ErrorCode 3000
    ref = api.post("/customers", _customer(api, TermsOfPaymentId="00000000-0000-0000-0000-000000000001"))
    assert ref.status_code == 400 and ref.json()["ErrorCode"] == 3000
    assert "TermsOfPaymentId" in ref.json()["DeveloperErrorMessage"]
    # articles: CodingId and UnitId required; amounts are numbers with 2 decimals
    art = api.post("/articles", {"IsActive": True, "Number": "A-9", "Name": "x", "NetPrice": "10.50"})
    text = art.json()["DeveloperErrorMessage"]
    assert art.status_code == 400 and "CodingId" in text and "UnitId" in text and "NetPrice: must be a number" in text
    three = api.post("/articles", _article(api, NetPrice=1.005))
    assert three.status_code == 400 and "NetPrice: Format: 2 decimals" in three.json()["DeveloperErrorMessage"]
    # orders: the Swagger's required fields, row fields and the Amount
    customer = api.post("/customers", _customer(api)).json()
    article = api.post("/articles", _article(api)).json()
    order = _order(customer["Id"], article["Id"])
    del order["InvoiceCountryCode"], order["Rows"][0]["IsWorkCost"]
    order["Rows"][0]["Quantity"] = "2"
    text = api.post("/orders", order).json()["DeveloperErrorMessage"]
    assert "InvoiceCountryCode" in text and "Rows[0].IsWorkCost" in text and "Rows[0].Quantity" in text
    wrong = api.post("/orders", _order(customer["Id"], article["Id"], Amount=20.0))
    assert wrong.status_code == 400 and "Amount" in wrong.json()["DeveloperErrorMessage"]
    assert api.post("/articles", _article(api)).status_code == 409  # duplicate Number: Conflict 4000


def test_customer_created_found_by_email_and_replaced_with_put(ea):
    _, url, _ = ea
    api = Api(url)
    created = api.post("/customers", _customer(api))
    assert created.status_code == 201
    cust = created.json()
    assert cust["CustomerNumber"] == "1" and cust["TermsOfPayment"]["NumberOfDays"] == 30
    found = api.get("/customers", **{"$filter": "EmailAddress eq 'info@jansen.example'"}).json()["Data"]
    assert [c["Id"] for c in found] == [cust["Id"]]
    assert api.get("/customers", **{"$filter": "EmailAddress eq 'INFO@jansen.example'"}).json()["Data"] == []
    # PUT replaces the whole object: the GET answer (read-only fields included) can be written back
    put = api.put(f"/customers/{cust['Id']}", {**cust, "Name": "Jansen & Zn BV"})
    assert put.status_code == 200 and put.json()["Name"] == "Jansen & Zn BV"
    partial = api.put(f"/customers/{cust['Id']}", {"Name": "only"})
    assert partial.status_code == 400 and "InvoiceCity" in partial.json()["DeveloperErrorMessage"]
    assert api.get("/customers/00000000-0000-0000-0000-000000000009").status_code == 404


def test_order_created_and_found_by_number_and_reference(ea):
    app, url, _ = ea
    api = Api(url)
    customer = api.post("/customers", _customer(api)).json()
    article = api.post("/articles", _article(api)).json()
    created = api.post("/orders", _order(customer["Id"], article["Id"]))
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["Number"] == 1 and order["Rows"][0]["ArticleNumber"] == "A-1"
    assert api.get("/orders", **{"$filter": "Number eq 1"}).json()["Data"][0]["Id"] == order["Id"]
    by_ref = api.get("/orders", **{"$filter": "YourReference eq 'tf-0001'"}).json()["Data"]
    assert [o["Id"] for o in by_ref] == [order["Id"]]
    dup = api.post("/orders", _order(customer["Id"], article["Id"], Number=1))
    assert dup.status_code == 409 and dup.json()["ErrorCode"] == 4000
    invoice = {
        "EuThirdParty": False,
        "CustomerId": customer["Id"],
        "RotReducedInvoicingType": 0,
        "Rows": [{"ArticleId": article["Id"], "Quantity": 2, "UnitPrice": 10.5}],
    }
    inv = api.post("/customerinvoices", invoice)
    assert inv.status_code == 201 and inv.json()["TotalAmount"] == 21 and inv.json()["TotalVatAmount"] == 4.41
    company = requests.get(f"{url}/_sandbox/companies/{COMPANY}", timeout=5).json()["company"]
    assert len(company["orders"]) == 1 and len(company["invoices"]) == 1 and app.state()["companies"][COMPANY]


def test_rate_limit_answers_429_with_error_code_4010_and_try_again_in(ea):
    _, url, clock = ea
    api = Api(url)
    requests.post(f"{url}/_sandbox/ratelimit", json={"limit": 3, "window_seconds": 60}, timeout=5)
    for _ in range(3):
        assert api.get("/customers").status_code == 200
    clock.now += 5
    resp = api.get("/customers")
    assert resp.status_code == 429
    body = resp.json()
    assert body["ErrorCode"] == 4010 and set(body) == {"ErrorCode", "DeveloperErrorMessage", "ErrorId"}
    assert (
        body["DeveloperErrorMessage"]
        == "API calls quota exceeded! maximum admitted 3 per Minute. Try again in 55 seconds."
    )
    assert api.get("/articles").status_code == 200  # per endpoint
    assert api.get("/customers/00000000-0000-0000-0000-000000000009").status_code == 429  # same collection
    clock.now += 55
    assert api.get("/customers").status_code == 200


def test_a_lost_answer_still_creates_the_order(ea):
    _, url, _ = ea
    api = Api(url)
    customer = api.post("/customers", _customer(api)).json()
    article = api.post("/articles", _article(api)).json()
    requests.post(f"{url}/_sandbox/lose", json={"count": 1, "paths": ["/v2/orders"]}, timeout=5)
    lost = api.post("/orders", _order(customer["Id"], article["Id"]))
    assert lost.status_code == 504
    found = api.get("/orders", **{"$filter": "YourReference eq 'tf-0001'"}).json()["Data"]
    assert len(found) == 1
    assert requests.get(f"{url}/_sandbox/lose", timeout=5).json() == {"count": 0, "paths": ["/v2/orders"], "lost": 1}
    assert api.post("/orders", _order(customer["Id"], article["Id"], YourReference="tf-0002")).status_code == 201
