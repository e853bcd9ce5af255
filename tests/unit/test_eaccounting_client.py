"""EaccountingClient against the Visma eAccounting stand-in: token rotation through the store, a spent token, the
429 body's wait, customers by e-mail, paged articles, orders found after a lost answer, masking."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import requests
from sandbox.eaccounting import EaccountingApp
from sandbox.server import _Server
from tillflow.errors import AuthError, ConfigError, RemoteError, TransientError
from tillflow.http import HttpPolicy
from tillflow.sources.base import ConnectionInfo
from tillflow.targets.eaccounting import EaccountingClient, MemoryTokenStore

SECRET = "cs-very-secret-4242"
CLIENT_ID = "tillflow-app"
_companies = itertools.count(1)
#: the limiter is process-wide per client id: a high rate keeps these tests fast
POLICY = HttpPolicy(max_attempts=4, rate_per_second=1000, burst=100, backoff_base=0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """A fake sleep that records each wait and moves the stand-in's rate-limit clock on."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.now += seconds


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
    """The stand-in, reset, and a company of this test's own (a fresh seed refresh token)."""
    app, url, clock = server
    app.reset()
    return app, url, clock, f"co{next(_companies)}-{time.monotonic_ns()}"


def _client(url: str, company: str, store=None, **kwargs) -> EaccountingClient:
    return EaccountingClient(
        base_url=f"{url}/v2",
        client_id=CLIENT_ID,
        refresh_token=f"ert-{company}",
        client_secret=kwargs.pop("client_secret", SECRET),
        token_url=f"{url}/connect/token",
        token_store=store if store is not None else MemoryTokenStore(),
        conn_id=kwargs.pop("conn_id", f"eaccounting_test:{company}"),
        policy=kwargs.pop("policy", POLICY),
        **kwargs,
    )


def _log(url: str, path: str) -> list[dict]:
    return requests.get(f"{url}/_sandbox/requests", params={"path": path}, timeout=5).json()


def _customer_payload(client: EaccountingClient, email: str = "info@jansen.example") -> dict:
    terms = client.terms_of_payment()
    return {
        "Name": "Jansen BV",
        "IsPrivatePerson": False,
        "IsActive": True,
        "TermsOfPaymentId": terms[0].key,
        "InvoiceCity": "Utrecht",
        "InvoicePostalCode": "3511 AA",
        "InvoiceCountryCode": "NL",
        "EmailAddress": email,
    }


def _reference(url: str, company: str, what: str) -> str:
    body = requests.get(f"{url}/_sandbox/companies/{company}", timeout=5).json()["company"]
    return body[what][0]["Id"]


def _article_payload(url: str, company: str, number: str) -> dict:
    return {
        "IsActive": True,
        "Number": number,
        "Name": f"Article {number}",
        "CodingId": _reference(url, company, "codings"),
        "UnitId": _reference(url, company, "units"),
    }


def _order_payload(customer_id: str, article_id: str, reference: str) -> dict:
    from decimal import Decimal

    return {
        "Amount": Decimal("21.00"),
        "CustomerId": customer_id,
        "CurrencyCode": "EUR",
        "VatAmount": Decimal("4.41"),
        "RoundingsAmount": Decimal("0.00"),
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
        "YourReference": reference,
        "Rows": [
            {
                "LineNumber": 0,
                "ArticleId": article_id,
                "Quantity": Decimal("2"),
                "UnitPrice": Decimal("10.50"),
                "IsTextRow": False,
                "IsWorkCost": False,
                "EligibleForReverseChargeOnVat": False,
            }
        ],
    }


class RecordingStore(MemoryTokenStore):
    """Records every swap and lets a test see whether the API was called before it."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.swaps: list[tuple[str | None, str, int]] = []

    def swap(self, conn_id: str, old: str | None, new: str) -> bool:
        api_calls = len([e for e in _log(self.url, "/v2/") if e["path"].startswith("/v2/")])
        self.swaps.append((old, new, api_calls))
        return super().swap(conn_id, old, new)


def test_the_rotated_token_is_swapped_into_the_store_before_it_is_used(ea):
    app, url, _, company = ea
    store = RecordingStore(url)
    client = _client(url, company, store)
    items = client.test_connection()
    assert {i.key for i in items} == {"1a", "1b", "1e"}
    assert len(store.swaps) == 1
    old, new, api_calls_before = store.swaps[0]
    assert old is None and new.startswith("ertr-") and api_calls_before == 0  # stored before any API call
    assert store.load(client.conn_id) == new
    # the stored token is the one the next refresh uses (the seed is spent)
    requests.post(f"{url}/_sandbox/tokens/expire", json={}, timeout=5)
    client.terms_of_payment()
    assert store.swaps[1][0] == new and client.token_calls == 2


def test_two_clients_sharing_a_store_both_work(ea):
    _, url, _, company = ea
    store = MemoryTokenStore()
    first = _client(url, company, store)
    second = _client(url, company, store)  # another process with the same connection, in effect
    assert first.terms_of_payment()
    assert second.terms_of_payment()  # refreshes with the token first stored, not the spent seed
    requests.post(f"{url}/_sandbox/tokens/expire", json={}, timeout=5)
    assert first.terms_of_payment() and second.terms_of_payment()
    assert first.token_calls == 2 and second.token_calls == 2


def test_a_token_rotated_by_someone_else_meanwhile_is_used(ea):
    _, url, _, company = ea
    store = MemoryTokenStore()
    first = _client(url, company, store)
    first.terms_of_payment()
    # a client that read the store before the rotation: it presents the spent seed, then picks up the stored token
    late = _client(url, company, store)
    late._current_refresh_token = lambda: (None, f"ert-{company}")  # noqa: SLF001 - simulate the race
    assert late.terms_of_payment()
    assert late.token_calls == 2


def test_an_already_used_refresh_token_is_one_auth_error_after_one_call(ea):
    _, url, _, company = ea
    assert (
        requests.post(
            f"{url}/connect/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": f"ert-{company}",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
            },
            timeout=5,
        ).status_code
        == 200
    )  # someone else spent the seed
    sleeps = Sleeps(FakeClock())
    client = _client(url, company, sleep=sleeps)
    with pytest.raises(AuthError) as err:
        client.terms_of_payment()
    text = str(err.value)
    assert "eaccounting: the refresh token was already used" in text and "re-authorise the connection" in text
    assert f"ert-{company}" not in text and SECRET not in text
    assert client.token_calls == 1 and len(_log(url, "/connect/token")) == 2
    assert _log(url, "/v2/") == []


def test_429_waits_the_seconds_named_in_the_body(ea):
    _, url, clock, company = ea
    sleeps = Sleeps(clock)
    client = _client(url, company, sleep=sleeps)
    requests.post(f"{url}/_sandbox/ratelimit", json={"limit": 2, "window_seconds": 60}, timeout=5)
    client.terms_of_payment()
    client.terms_of_payment()
    clock.now += 13
    assert client.terms_of_payment()  # 429 "Try again in 47 seconds." → waited, then answered
    assert sleeps.waits == [47.0]
    statuses = [e["status"] for e in _log(url, "/v2/termsofpayments")]
    assert statuses == [200, 200, 429, 200]


def test_429_wait_is_capped_by_the_policy_and_gives_up_after_max_attempts(ea):
    _, url, clock, company = ea
    frozen = FakeClock()
    sleeps = Sleeps(frozen)  # the stand-in's clock does not move: every attempt is refused
    policy = HttpPolicy(max_attempts=3, rate_per_second=1000, burst=100, max_retry_after=5)
    client = _client(url, company, sleep=sleeps, policy=policy)
    requests.post(f"{url}/_sandbox/ratelimit", json={"limit": 1, "window_seconds": 60}, timeout=5)
    client.terms_of_payment()
    with pytest.raises(TransientError, match="still rate limited"):
        client.terms_of_payment()
    assert sleeps.waits == [5, 5]


def test_find_and_create_customer_by_email_and_update(ea):
    _, url, _, company = ea
    client = _client(url, company)
    assert client.find_customer_by_email("o'brien@jansen.example") is None  # the quote is escaped
    cid = client.create_customer(_customer_payload(client, "o'brien@jansen.example"))
    found = client.find_customer_by_email("o'brien@jansen.example")
    assert found is not None and found["Id"] == cid
    updated = client.update_customer(cid, {"Name": "Jansen & Zn BV", "Telephone": "030-1234567"})
    assert updated["Name"] == "Jansen & Zn BV" and updated["InvoiceCity"] == "Utrecht"
    with pytest.raises(RemoteError) as err:
        client.create_customer({"Name": "No terms", "IsPrivatePerson": True, "IsActive": True})
    assert err.value.status == 400 and "TermsOfPaymentId" in str(err.value) and "InvoiceCity" in str(err.value)
    with pytest.raises(ConfigError):
        client.update_customer("not-a-guid", {})


def test_articles_are_read_page_by_page(ea):
    _, url, _, company = ea
    client = _client(url, company)
    for i in range(5):
        client.create_article(_article_payload(url, company, f"P-{i}"))
    client.page_size = 2
    numbers = [a["Number"] for a in client.articles()]
    assert numbers == [f"P-{i}" for i in range(5)]
    pages = [e["query"] for e in _log(url, "/v2/articles") if e["method"] == "GET"]
    assert [q["$page"] for q in pages] == ["1", "2", "3"] and all(q["$pagesize"] == "2" for q in pages)
    assert client.find_article("P-3")["Number"] == "P-3"
    assert client.find_article("P-9") is None
    refs = client.reference_data()
    assert set(refs) == {"vat_code", "terms_of_payment", "article"} and len(refs["article"]) == 5


def test_order_created_then_found(ea):
    _, url, _, company = ea
    client = _client(url, company)
    cid = client.create_customer(_customer_payload(client))
    aid = client.create_article(_article_payload(url, company, "A-1"))
    assert client.find_order("tf-0001") is None
    oid = client.create_order(_order_payload(cid, aid, "tf-0001"))
    assert client.find_order("tf-0001") == oid
    assert client.find_order(1) == oid and client.find_order("1") == oid
    bad = _order_payload(cid, aid, "tf-0002")
    bad["Amount"] = bad["Amount"] + 1
    with pytest.raises(RemoteError) as err:
        client.create_order(bad)
    assert err.value.status == 400 and "Amount" in str(err.value)


def test_a_lost_create_answer_is_outcome_unknown_and_find_order_finds_it(ea):
    _, url, _, company = ea
    client = _client(url, company)
    cid = client.create_customer(_customer_payload(client))
    aid = client.create_article(_article_payload(url, company, "A-1"))
    requests.post(f"{url}/_sandbox/lose", json={"count": 1, "paths": ["/v2/orders"]}, timeout=5)
    with pytest.raises(TransientError, match="outcome unknown"):
        client.create_order(_order_payload(cid, aid, "tf-lost-1"))
    assert len([e for e in _log(url, "/v2/orders") if e["method"] == "POST"]) == 1  # never repeated blindly
    assert client.find_order("tf-lost-1") is not None


def test_secrets_never_appear_in_messages(ea):
    _, url, _, company = ea
    store = MemoryTokenStore()
    client = _client(url, company, store)
    client.terms_of_payment()
    rotated = store.load(client.conn_id)
    access = client.access_token()
    with pytest.raises(RemoteError) as err:
        client.create_customer({"Name": SECRET, "IsPrivatePerson": True, "IsActive": True, "Note": access})
    text = str(err.value)
    assert SECRET not in text and access not in text and rotated not in text
    # the token endpoint refusing the client names neither the secret nor the token
    other = _client(url, f"{company}-b", client_secret="wrong-but-secret")
    other.client_id = ""
    with pytest.raises(AuthError) as err:
        other.access_token()
    assert "wrong-but-secret" not in str(err.value) and f"ert-{company}-b" not in str(err.value)


def test_from_connection_checks_the_fields():
    conn = ConnectionInfo(conn_id="ea", host="", login="app", password="ert-x", extra={"client_secret": SECRET})
    client = EaccountingClient.from_connection(conn, token_store=MemoryTokenStore())
    assert client.http.base_url == "https://eaccountingapi.vismaonline.com/v2"
    assert client.token_url == "https://identity.vismaonline.com/connect/token"
    assert client.conn_id.startswith("ea:") and "ert-x" not in client.conn_id
    assert (client.name, client.mapping_kind, client.flows) == ("eaccounting", "vat_code", ("orders", "products"))
    with pytest.raises(ConfigError, match="client_secret"):
        EaccountingClient.from_connection(ConnectionInfo(conn_id="ea", login="app", password="ert-x"))
    with pytest.raises(ConfigError, match="password"):
        EaccountingClient.from_connection(ConnectionInfo(conn_id="ea", login="app", extra={"client_secret": "s"}))


def test_an_article_with_a_bad_price_or_stock_is_a_reject_naming_the_field_and_the_rest_parse():
    import json
    from decimal import Decimal

    from tillflow.records import RawPage
    from tillflow.sources.eaccounting_articles import EaccountingArticles

    articles = [
        {"Number": "A1", "Name": "Cola", "NetPrice": 1.65, "GrossPrice": 2.0, "StockBalanceAvailable": 12},
        {"Number": "A2", "Name": "Bier", "NetPrice": "abc", "GrossPrice": 3.5},
        {"Number": "A3", "Name": "Wijn", "NetPrice": 5, "StockBalanceAvailable": "lots"},
    ]
    page = RawPage(flow="products", request={}, body=json.dumps({"articles": articles}).encode())
    records, rejects = EaccountingArticles(client=type("C", (), {"http": None})()).parse(page)
    assert records == [
        {"sku": "A1", "name": "Cola", "price_excl": "1.65", "price_incl": "2.00"}
        | {"active": True, "stock_available": "12"}
    ]
    assert Decimal(records[0]["price_incl"]) == Decimal("2.00")
    assert [(r.ref, r.reason) for r in rejects] == [
        ("article A2", "article A2: NetPrice: not a decimal amount: 'abc'"),
        ("article A3", "article A3: StockBalanceAvailable: not a quantity: 'lots'"),
    ]
