"""Stand-in for the Visma eAccounting API v2 (sales: customers, articles, orders, customer invoices) and its
OAuth token endpoint.

Standard library only, nothing from ``tillflow``. Start it like the others::

    from sandbox.server import _Server
    from sandbox.eaccounting import EaccountingApp
    server = _Server(("127.0.0.1", 0), EaccountingApp())   # then serve_forever in a thread
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v2"
    token_url = f"http://127.0.0.1:{server.server_address[1]}/connect/token"

The contract, with its sources:

* **OAuth 2.0** (https://developer.vismaonline.com/docs/authentication): ``POST
  https://identity.vismaonline.com/connect/token`` with a form body (the identity server takes
  ``application/x-www-form-urlencoded`` only: https://developer.vismaonline.com/docs/change-to-our-new-identity-server),
  ``grant_type=refresh_token``, ``refresh_token``; the client authenticates with HTTP Basic
  (``client_id:client_secret``) or the form fields ``client_id``/``client_secret``. Scopes ``ea:api`` and
  ``offline_access`` are mandatory, ``ea:sales``/``ea:accounting``/``ea:purchase`` (and ``*_readonly``)
  optional. "When requesting tokens, the Refresh Tokens will always be updated … the same Refresh Token cannot
  be used more than once" (change-to-our-new-identity-server): every refresh answers a new refresh token and
  spends the one used; presenting it again is ``400 {"error": "invalid_grant"}``. **No grace period**: Visma
  documents none for identity.vismaonline.com (the 5–60 s grace setting at
  https://developer.dinero.dk/news/grace-period-on-refresh-tokens belongs to *Visma Connect*, a different
  identity server), so a spent token is refused at once, even a second later. Access tokens live 3600 s.
* **API** ``https://eaccountingapi.vismaonline.com/v2/`` — paths, models and required fields from Visma's
  Swagger 2.0 document (``swagger.json`` of https://github.com/pwitab/visma, taken from
  ``https://eaccountingapi-sandbox.test.vismaonline.com/swagger/docs/v2``):
  ``GET/POST /v2/customers``, ``GET/PUT /v2/customers/{id}``; ``GET/POST /v2/articles``, ``GET/PUT
  /v2/articles/{id}``; ``GET/POST /v2/orders``, ``GET /v2/orders/{id}``; ``GET/POST /v2/customerinvoices``,
  ``GET /v2/customerinvoices/{id}``; ``GET /v2/termsofpayments``, ``/v2/units``, ``/v2/articleaccountcodings``
  (paged) and ``GET /v2/vatcodes`` (a plain JSON array, not paged, per the Swagger document). All lower case.
  Required (Swagger ``required``): **CustomerApi** ``Name`` (≤ 50), ``IsPrivatePerson``, ``IsActive``,
  ``TermsOfPaymentId`` (from ``/v2/termsofpayments``), ``InvoiceCity`` (≤ 50), ``InvoicePostalCode`` (≤ 10) —
  ``InvoiceCountryCode`` (≤ 2) is *not* required; **ArticleApi** ``IsActive``, ``Number`` (≤ 40), ``Name``
  (≤ 50), ``CodingId`` (from ``/v2/articleaccountcodings``, which carries the VAT rate), ``UnitId`` (from
  ``/v2/units``); **OrderApi** ``Amount``, ``CustomerId``, ``CurrencyCode``, ``VatAmount``,
  ``RoundingsAmount``, ``InvoiceCity``, ``InvoiceCountryCode``, ``InvoiceCustomerName``, ``InvoicePostalCode``,
  ``EuThirdParty``, ``CustomerIsPrivatePerson``, ``OrderDate``, ``Status`` (1 Draft, 2 Ongoing, 3 Shipped,
  4 Invoiced), ``RotReducedInvoicingType`` (0, 1, 2), ``ReverseChargeOnConstructionServices``; its ``Rows``
  each need ``LineNumber`` (0..1000), ``IsTextRow``, ``IsWorkCost``, ``EligibleForReverseChargeOnVat``;
  amounts have 2 decimals, ``Quantity`` and ``DiscountPercentage`` (0..1) 4; **CustomerInvoiceApi**
  ``EuThirdParty``, ``CustomerId``, ``Rows``, ``RotReducedInvoicingType``. Scopes per endpoint (Swagger):
  the sales endpoints need ``ea:sales`` (``ea:sales_readonly`` for GET); ``/v2/vatcodes`` needs
  ``ea:accounting`` or ``ea:accounting_readonly`` — a connection authorised with ``ea:api offline_access
  ea:sales`` only cannot read VAT codes (``403``, ErrorCode 4006).
* **Lists**: OData query options ``$filter``, ``$orderby``, ``$page`` (from 1), ``$pagesize`` (default 50:
  https://www.maesn.com/blogs/visma-eaccounting-api-integration) with the envelope ``{"Meta": {"CurrentPage",
  "PageSize", "TotalNumberOfPages", "TotalNumberOfResults", "ServerTimeUtc"}, "Data": [...]}``
  (``PaginatedResponse``/``PaginationMetadata`` in the Swagger document).
* **Rate limit** (https://developer.vismaonline.com/docs/rate-limits): 600 requests per minute, "registered per
  client and endpoint/URL"; over it ``429`` with ``{"ErrorCode": 4010, "DeveloperErrorMessage": "API calls quota
  exceeded! maximum admitted 600 per Minute. Try again in 55 seconds.", "ErrorId": "<uuid>"}`` and no
  ``Retry-After`` header documented.
* **Errors** (https://developer.vismaonline.com/docs/error-codes): the body is ``{"ErrorCode",
  "DeveloperErrorMessage", "ErrorId"}``; DataModelValidationError 2000, ResourceNotFound 3000, Conflict 4000
  ("an object that cannot exist as a duplicate"), NotAuthorized 4005, NoAccessToScopes 4006, 4010 rate limit.

Assumptions where the documentation is silent (each chosen to be strict, so a client bug shows here first):

* A validation failure is ``400`` ErrorCode 2000 whose ``DeveloperErrorMessage`` names every refused field, one
  ``Field: message`` per line in ASP.NET's words ("The Name field is required."); nested fields as
  ``Rows[0].ArticleId``. A reference to an id that does not exist (``TermsOfPaymentId``, ``CustomerId``,
  ``ArticleId``, ``CodingId``, ``UnitId``) is ``400`` ErrorCode 3000 naming the field; an unknown id in the path
  is ``404`` ErrorCode 3000. A duplicate ``Article.Number``, ``CustomerNumber`` or order ``Number`` is ``409``
  ErrorCode 4000. A create answers ``201`` with the object (the Swagger document lists ``200`` only).
* Types are checked strictly (Json.NET would coerce): numbers must be JSON numbers, booleans JSON booleans,
  ids UUID strings, dates ``YYYY-MM-DD`` (a ``T00:00:00`` time part is accepted). A field the model does not
  have is refused (2000); the model's read-only fields (``Id``, ``ChangedUtc``, ``UnitName`` …) are accepted
  and ignored, so an object read with GET can be PUT back. ``PUT`` replaces the whole object: the required
  fields are required again.
* An article row of an order (``IsTextRow`` false) needs ``ArticleId`` of an existing article, ``Quantity`` and
  ``UnitPrice``; a text row needs ``Text``. ``Amount`` must equal the sum of the article rows' net amounts
  (``Quantity × UnitPrice × (1 − DiscountPercentage)``, each rounded half-up to cents); ``VatAmount`` is not
  cross-checked. A missing order ``Number`` gets the next free one.
* ``$pagesize`` above 1000 (the maximum is not documented), ``$pagesize`` or ``$page`` below 1, a query option
  the endpoint does not know, a ``$filter`` that does not parse or names an unknown property: ``400`` (never
  clipped or ignored). ``$filter`` takes ``eq ne gt ge lt le``, ``and``/``or``/``not``, parentheses and
  ``contains``/``startswith``/``endswith``; string literals in single quotes (``''`` escapes one), compared
  exactly (case-sensitive); GUIDs bare or as ``guid'…'``. Lists are in creation order unless ``$orderby``.
* The rate limit is a **sliding** 60 s window keyed by (client id, collection) — ``/v2/customers`` and
  ``/v2/customers/{id}`` count together (stricter than per URL). "Try again in N seconds" is the whole seconds
  until the oldest request leaves the window (at least 1). The token endpoint is not rate limited.
* The sandbox's seed refresh token ``ert-<company>`` (any company name) is single-use like every issued one (a
  fresh consent). A refresh token is bound to the client id that first used it. ``client_secret`` must be
  given but its value is not checked. Scopes granted: ``ea:api offline_access ea:sales ea:accounting_readonly``
  unless ``POST /_sandbox/scopes`` says otherwise.
* Each company starts with terms of payment, units, article account codings and VAT codes of a Dutch company
  (21 %, 9 %, 0 %); their ids are stable UUIDs derived from the company name.

Control (besides the base class's ``reset``/``faults``/``requests``/``config``/``state``):

* ``POST /_sandbox/lose`` ``{"count": N, "paths": ["/v2/orders"]}``: the next N POSTs whose path starts with one
  of ``paths`` (default: every API POST) are processed — the object *is* created — but the answer is lost: the
  client gets ``504``. ``GET`` shows what is left.
* ``POST /_sandbox/ratelimit`` ``{"limit": 600, "window_seconds": 60}``: the rate limit (tests trigger it).
* ``POST /_sandbox/scopes`` ``{"company": "acme", "scopes": ["ea:api", …]}``: the scopes the company's next
  tokens get.
* ``POST /_sandbox/tokens/expire`` ``{"company"?}``: every access token (of that company) expires now.
* ``GET /_sandbox/companies/{company}``: customers, articles, orders, invoices and the reference data.
* ``GET /_sandbox/state`` also counts the refresh grants answered per company (``refreshes``).
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import parse_qs, quote, unquote

from sandbox.server import BadRequest, Request, Response, VendorApp, json_response, json_type, shown

API_PREFIX = "/v2"
TOKEN_PATH = "/connect/token"
TOKEN_TTL = 3600
RATE_LIMIT = 600
RATE_WINDOW = 60.0
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_SCOPES = ("ea:api", "offline_access", "ea:sales", "ea:accounting_readonly")
LOST_STATUS = 504
_SEED_REFRESH_RE = re.compile(r"^ert-(\S+)$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T00:00:00(\.0+)?Z?)?$")
_CENT = Decimal("0.01")

#: ErrorCode per HTTP status (https://developer.vismaonline.com/docs/error-codes)
ERROR_CODES = {400: 2000, 401: 4005, 403: 4006, 404: 3000, 405: 2000, 409: 4000, 415: 2000, 429: 4010}


# --------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class F:
    """One property of a model: its kind and limits."""

    kind: str  # str, uuid, bool, int, num, date, strings, list, ro (read-only: accepted, ignored)
    max_len: int | None = None
    minimum: Decimal | int | None = None
    maximum: Decimal | int | None = None
    decimals: int | None = None
    enum: tuple[int, ...] | None = None


RO = F("ro")
S = F("str")
UUID = F("uuid")
BOOL = F("bool")
MONEY = F("num", decimals=2)


def _s(n: int) -> F:
    return F("str", max_len=n)


CUSTOMER = {
    "Id": RO,
    "CustomerNumber": _s(16),
    "CorporateIdentityNumber": _s(20),
    "ContactPersonEmail": _s(255),
    "ContactPersonMobile": _s(50),
    "ContactPersonName": _s(100),
    "ContactPersonPhone": _s(50),
    "CurrencyCode": _s(3),
    "GLN": _s(255),
    "EmailAddress": _s(255),
    "InvoiceAddress1": _s(50),
    "InvoiceAddress2": _s(50),
    "InvoiceCity": _s(50),
    "InvoiceCountryCode": _s(2),
    "InvoicePostalCode": _s(10),
    "DeliveryCustomerName": _s(100),
    "DeliveryAddress1": _s(50),
    "DeliveryAddress2": _s(50),
    "DeliveryCity": _s(50),
    "DeliveryCountryCode": _s(2),
    "DeliveryPostalCode": _s(10),
    "DeliveryMethodId": UUID,
    "DeliveryTermId": UUID,
    "PayToAccountId": RO,
    "Name": _s(50),
    "Note": _s(4000),
    "ReverseChargeOnConstructionServices": BOOL,
    "WebshopCustomerNumber": F("int"),
    "MobilePhone": _s(50),
    "Telephone": _s(50),
    "TermsOfPaymentId": UUID,
    "TermsOfPayment": RO,
    "VatNumber": _s(20),
    "WwwAddress": _s(255),
    "LastInvoiceDate": RO,
    "IsPrivatePerson": BOOL,
    "DiscountPercentage": F("num", minimum=0, maximum=1, decimals=4),
    "ChangedUtc": RO,
    "IsActive": BOOL,
    "ForceBookkeepVat": BOOL,
    "EdiGlnNumber": S,
    "SalesDocumentLanguage": _s(2),
    "ElectronicAddress": S,
    "ElectronicReference": S,
    "EdiServiceDelivererId": S,
    "AutoInvoiceActivationEmailSentDate": RO,
    "AutoInvoiceRegistrationRequestSentDate": RO,
    "EmailAddresses": F("strings"),
    "CustomerLabels": F("list"),
}
CUSTOMER_REQUIRED = ("Name", "IsPrivatePerson", "IsActive", "TermsOfPaymentId", "InvoiceCity", "InvoicePostalCode")

ARTICLE = {
    "Id": RO,
    "IsActive": BOOL,
    "Number": _s(40),
    "Name": _s(50),
    "NameEnglish": _s(50),
    "NetPrice": F("num", minimum=0, maximum=10_000_000, decimals=2),
    "GrossPrice": F("num", minimum=0, maximum=10_000_000, decimals=2),
    "CodingId": UUID,
    "CodingName": RO,
    "UnitId": UUID,
    "UnitName": RO,
    "UnitAbbreviation": RO,
    "StockBalance": F("num", decimals=4),
    "StockBalanceManuallyChangedUtc": RO,
    "StockBalanceReserved": RO,
    "StockBalanceAvailable": RO,
    "ChangedUtc": RO,
    "HouseWorkType": F("int"),
    "PurchasePrice": F("num", minimum=0, decimals=2),
    "PurchasePriceManuallyChangedUtc": RO,
    "SendToWebshop": BOOL,
    "ArticleLabels": F("list"),
}
ARTICLE_REQUIRED = ("IsActive", "Number", "Name", "CodingId", "UnitId")

ORDER = {
    "Id": RO,
    "Amount": MONEY,
    "CustomerId": UUID,
    "CurrencyCode": _s(3),
    "CreatedUtc": RO,
    "VatAmount": MONEY,
    "RoundingsAmount": MONEY,
    "DeliveredAmount": MONEY,
    "DeliveredVatAmount": MONEY,
    "DeliveredRoundingsAmount": MONEY,
    "DeliveryCustomerName": _s(50),
    "DeliveryAddress1": _s(50),
    "DeliveryAddress2": _s(50),
    "DeliveryPostalCode": _s(10),
    "DeliveryCity": _s(50),
    "DeliveryCountryCode": _s(2),
    "YourReference": _s(50),
    "OurReference": _s(50),
    "InvoiceAddress1": _s(50),
    "InvoiceAddress2": _s(50),
    "InvoiceCity": S,
    "InvoiceCountryCode": _s(2),
    "InvoiceCustomerName": _s(50),
    "InvoicePostalCode": _s(10),
    "DeliveryMethodName": _s(50),
    "DeliveryMethodCode": _s(20),
    "DeliveryTermName": _s(50),
    "DeliveryTermCode": _s(20),
    "EuThirdParty": BOOL,
    "CustomerIsPrivatePerson": BOOL,
    "OrderDate": F("date"),
    "Status": F("int", enum=(1, 2, 3, 4)),
    "Number": F("int", minimum=1, maximum=2**31 - 1),
    "ModifiedUtc": RO,
    "DeliveryDate": F("date"),
    "HouseWorkAmount": MONEY,
    "HouseWorkAutomaticDistribution": BOOL,
    "HouseWorkCorporateIdentityNumber": _s(20),
    "HouseWorkPropertyName": _s(100),
    "Rows": F("list"),
    "ShippedDateTime": F("date"),
    "RotReducedInvoicingType": F("int", enum=(0, 1, 2)),
    "RotPropertyType": F("int"),
    "Persons": F("list"),
    "ReverseChargeOnConstructionServices": BOOL,
}
ORDER_REQUIRED = (
    "Amount",
    "CustomerId",
    "CurrencyCode",
    "VatAmount",
    "RoundingsAmount",
    "InvoiceCity",
    "InvoiceCountryCode",
    "InvoiceCustomerName",
    "InvoicePostalCode",
    "EuThirdParty",
    "CustomerIsPrivatePerson",
    "OrderDate",
    "Status",
    "RotReducedInvoicingType",
    "ReverseChargeOnConstructionServices",
)
ORDER_ROW = {
    "LineNumber": F("int", minimum=0, maximum=1000),
    "DeliveredQuantity": F("num", decimals=2),
    "ArticleId": UUID,
    "ArticleNumber": _s(40),
    "IsTextRow": BOOL,
    "Text": _s(2000),
    "UnitPrice": MONEY,
    "DiscountPercentage": F("num", minimum=0, maximum=1, decimals=4),
    "Quantity": F("num", decimals=4),
    "WorkCostType": F("int"),
    "IsWorkCost": BOOL,
    "EligibleForReverseChargeOnVat": BOOL,
    "CostCenterItemId1": UUID,
    "CostCenterItemId2": UUID,
    "CostCenterItemId3": UUID,
    "Id": RO,
    "ProjectId": UUID,
}
ORDER_ROW_REQUIRED = ("LineNumber", "IsTextRow", "IsWorkCost", "EligibleForReverseChargeOnVat")

INVOICE_WRITABLE = {
    "EuThirdParty": BOOL,
    "IsCreditInvoice": BOOL,
    "CurrencyRate": F("num", minimum=0, decimals=6),
    "CustomerId": UUID,
    "Rows": F("list"),
    "InvoiceDate": F("date"),
    "DueDate": F("date"),
    "DeliveryDate": F("date"),
    "RotReducedInvoicingType": F("int", enum=(0, 1, 2)),
    "RotReducedInvoicingAmount": MONEY,
    "RotReducedInvoicingPropertyName": S,
    "RotReducedInvoicingOrgNumber": _s(11),
    "Persons": F("list"),
    "ElectronicReference": S,
    "EdiServiceDelivererId": _s(50),
    "OurReference": _s(50),
    "YourReference": _s(50),
    "DeliveryAddress2": _s(50),
    "RotPropertyType": F("int", enum=(1, 2)),
    "WorkHouseOtherCosts": MONEY,
    "SendType": F("int", enum=(0, 1, 2, 3)),
}
_INVOICE_READONLY = (
    "Id CurrencyCode CreatedByUserId TotalAmount TotalVatAmount TotalRoundings TotalAmountInvoiceCurrency "
    "TotalVatAmountInvoiceCurrency RotReducedInvoicingPercent RotReducedInvoicingAutomaticDistribution "
    "ElectronicAddress InvoiceCustomerName InvoiceAddress1 InvoiceAddress2 InvoicePostalCode InvoiceCity "
    "InvoiceCountryCode DeliveryCustomerName DeliveryAddress1 DeliveryPostalCode DeliveryCity DeliveryCountryCode "
    "DeliveryMethodName DeliveryTermName DeliveryMethodCode DeliveryTermCode CustomerIsPrivatePerson "
    "TermsOfPaymentId CustomerEmail InvoiceNumber CustomerNumber PaymentReferenceNumber SalesDocumentAttachments "
    "HasAutoInvoiceError IsNotDelivered ReverseChargeOnConstructionServices RemainingAmount "
    "RemainingAmountInvoiceCurrency ReferringInvoiceId VoucherNumber VoucherId CreatedUtc ModifiedUtc "
    "ReversedConstructionVatInvoicing IncludesVat"
).split()
INVOICE = {**INVOICE_WRITABLE, **{name: RO for name in _INVOICE_READONLY}}
INVOICE_REQUIRED = ("EuThirdParty", "CustomerId", "Rows", "RotReducedInvoicingType")
INVOICE_ROW = {
    "Id": RO,
    "ArticleNumber": RO,
    "ArticleId": UUID,
    "AmountNoVat": RO,
    "PercentVat": RO,
    "LineNumber": RO,
    "IsTextRow": RO,
    "Text": S,
    "UnitPrice": MONEY,
    "UnitAbbreviation": RO,
    "UnitAbbreviationEnglish": RO,
    "DiscountPercentage": F("num", minimum=0, maximum=1, decimals=4),
    "Quantity": F("num", decimals=4),
    "IsWorkCost": RO,
    "IsVatFree": BOOL,
    "CostCenterItemId1": UUID,
    "CostCenterItemId2": UUID,
    "CostCenterItemId3": UUID,
    "UnitId": RO,
    "ProjectId": UUID,
    "WorkCostType": F("int"),
    "WorkHours": F("num", decimals=2),
    "MaterialCosts": MONEY,
}

#: collection → (store key, model name for messages, scopes to read, scopes to write)
_SALES_READ = ("ea:sales", "ea:sales_readonly")
_SALES_WRITE = ("ea:sales",)
COLLECTIONS = {
    "customers": ("customers", "CustomerApi", _SALES_READ, _SALES_WRITE),
    "articles": ("articles", "ArticleApi", _SALES_READ, _SALES_WRITE),
    "orders": ("orders", "OrderApi", _SALES_READ, _SALES_WRITE),
    "customerinvoices": ("invoices", "CustomerInvoiceApi", _SALES_READ, _SALES_WRITE),
    "termsofpayments": (
        "terms",
        "TermsOfPaymentApi",
        ("ea:sales", "ea:sales_readonly", "ea:purchase", "ea:purchase_readonly"),
        (),
    ),
    "units": ("units", "UnitApi", _SALES_READ, ()),
    "articleaccountcodings": ("codings", "ArticleAccountCodingAPI", _SALES_READ, ()),
    "vatcodes": ("vatcodes", "VatCode", ("ea:accounting", "ea:accounting_readonly"), ()),
}
#: list query options per collection besides $filter/$orderby/$page/$pagesize
_EXTRA_PARAMS = {
    "articles": {"showPricesWithTwoDecimals"},
    "customerinvoices": {"modifiedSinceUtc"},
    "vatcodes": {"vatRateDate"},
}
_ODATA = {"$filter", "$orderby", "$page", "$pagesize"}

_SEED_TERMS = (
    ("30 dagen", "30 days", 30, 1, "Normal"),
    ("14 dagen", "14 days", 14, 1, "Normal"),
    ("Contant", "Cash", 0, 3, "Cash"),
)
_SEED_UNITS = (("Stuk", "st", "st"), ("Uur", "h", "u"), ("Kilogram", "kg", "kg"))
_SEED_CODINGS = (
    ("Omzet hoog tarief", "Sales high rate", "21%", Decimal("0.21")),
    ("Omzet laag tarief", "Sales low rate", "9%", Decimal("0.09")),
    ("Omzet vrijgesteld", "Sales exempt", "0%", Decimal("0")),
)
_SEED_VATCODES = (
    ("1a", "Leveringen/diensten belast met hoog tarief", Decimal("0.21")),
    ("1b", "Leveringen/diensten belast met laag tarief", Decimal("0.09")),
    ("1e", "Leveringen/diensten belast met 0% of niet bij u belast", Decimal("0")),
)


class Invalid(Exception):
    """A 400 naming the refused fields: ``[(field, message)]``, with the ErrorCode."""

    def __init__(self, problems: list[tuple[str, str]], code: int = 2000, status: int = 400):
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems
        self.code = code
        self.status = status


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seed_id(company: str, kind: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"eaccounting-sandbox/{company}/{kind}/{name}"))


def _jsonable(value):
    """Decimals as JSON numbers (exact digits via float's shortest repr)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _round(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------------- OData $filter


class _Filter:
    """A small OData ``$filter`` parser: comparisons, and/or/not, parentheses, contains/startswith/endswith."""

    _TOKEN = re.compile(
        r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<guid>guid'[^']*')|(?P<dtm>datetime'[^']*')"
        r"|(?P<num>-?\d+(?:\.\d+)?(?![\w-]))|(?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
        r"-[0-9a-fA-F]{12})|(?P<date>\d{4}-\d{2}-\d{2}(?:T[\d:.]+Z?)?)|(?P<word>[A-Za-z_][\w/]*)|(?P<sym>[(),]))"
    )
    _OPS = ("eq", "ne", "gt", "ge", "lt", "le")
    _FUNCS = ("contains", "startswith", "endswith")

    def __init__(self, text: str, fields: dict[str, F], model: str):
        self.fields = fields
        self.model = model
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = self._TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise BadRequest(f"$filter: syntax error at position {pos}: {text[pos : pos + 20]!r}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0
        self.tree = self._or()
        if self.i != len(self.tokens):
            raise BadRequest(f"$filter: unexpected {self.tokens[self.i][1]!r}")

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise BadRequest("$filter: unexpected end of expression")
        self.i += 1
        return tok

    def _or(self):
        node = self._and()
        while self._peek() == ("word", "or"):
            self.i += 1
            node = ("or", node, self._and())
        return node

    def _and(self):
        node = self._not()
        while self._peek() == ("word", "and"):
            self.i += 1
            node = ("and", node, self._not())
        return node

    def _not(self):
        if self._peek() == ("word", "not"):
            self.i += 1
            return ("not", self._not())
        return self._atom()

    def _property(self, name: str) -> str:
        spec = self.fields.get(name)
        if spec is None or spec.kind in ("list", "strings"):
            raise BadRequest(f"$filter: could not find a property named '{name}' on type '{self.model}'")
        return name

    def _literal(self):
        kind, text = self._take()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "guid":
            value = text[5:-1]
            if not _UUID_RE.match(value):
                raise BadRequest(f"$filter: {text} is not a GUID")
            return value.lower()
        if kind == "uuid":
            return text.lower()
        if kind in ("dtm", "date"):
            value = text[9:-1] if kind == "dtm" else text
            m = re.match(r"^(\d{4}-\d{2}-\d{2})", value)
            try:
                if m:
                    return dt.date.fromisoformat(m.group(1))
            except ValueError:
                pass
            raise BadRequest(f"$filter: {text} is not a date")
        if kind == "num":
            return Decimal(text)
        if kind == "word" and text in ("true", "false"):
            return text == "true"
        if kind == "word" and text == "null":
            return None
        raise BadRequest(f"$filter: expected a literal, got {text!r}")

    def _atom(self):
        kind, text = self._take()
        if (kind, text) == ("sym", "("):
            node = self._or()
            if self._take() != ("sym", ")"):
                raise BadRequest("$filter: missing ')'")
            return node
        if kind == "word" and text in self._FUNCS and self._peek() == ("sym", "("):
            self.i += 1
            kind2, name = self._take()
            if kind2 != "word":
                raise BadRequest(f"$filter: {text}() needs a property first")
            prop = self._property(name)
            if self._take() != ("sym", ","):
                raise BadRequest(f"$filter: {text}(property, 'text') expected")
            value = self._literal()
            if self._take() != ("sym", ")"):
                raise BadRequest("$filter: missing ')'")
            if not isinstance(value, str) or self.fields[prop].kind != "str":
                raise BadRequest(f"$filter: {text}() takes a string property and a string literal")
            return (text, prop, value)
        if kind != "word":
            raise BadRequest(f"$filter: expected a property name, got {text!r}")
        prop = self._property(text)
        op_kind, op = self._take()
        if op_kind != "word" or op not in self._OPS:
            raise BadRequest(f"$filter: expected one of {', '.join(self._OPS)} after {prop}, got {op!r}")
        value = self._literal()
        self._check_type(prop, value)
        return ("cmp", prop, op, value)

    def _check_type(self, prop: str, value) -> None:
        kind = self.fields[prop].kind
        if value is None or kind == "ro":
            return
        ok = {
            "str": isinstance(value, str),
            "uuid": isinstance(value, str) and bool(_UUID_RE.match(value)),
            "bool": isinstance(value, bool),
            "int": isinstance(value, Decimal) and value == value.to_integral_value(),
            "num": isinstance(value, Decimal),
            "date": isinstance(value, dt.date),
        }.get(kind, True)
        if not ok:
            raise BadRequest(f"$filter: {prop} cannot be compared with {value!r} (a {kind} property)")

    def matches(self, rec: dict) -> bool:
        return self._eval(self.tree, rec)

    def _eval(self, node, rec: dict) -> bool:
        op = node[0]
        if op == "or":
            return self._eval(node[1], rec) or self._eval(node[2], rec)
        if op == "and":
            return self._eval(node[1], rec) and self._eval(node[2], rec)
        if op == "not":
            return not self._eval(node[1], rec)
        if op in self._FUNCS:
            have = rec.get(node[1])
            if not isinstance(have, str):
                return False
            return {
                "contains": node[2] in have,
                "startswith": have.startswith(node[2]),
                "endswith": have.endswith(node[2]),
            }[op]
        _, prop, cmp, value = node
        have = rec.get(prop)
        kind = self.fields[prop].kind
        if kind == "uuid" and isinstance(have, str):
            have = have.lower()
        if kind == "date" and isinstance(have, str):
            have = dt.date.fromisoformat(have[:10])
        if isinstance(have, int | float) and not isinstance(have, bool):
            have = Decimal(str(have))
        if cmp in ("eq", "ne"):
            return (have == value) == (cmp == "eq")
        if have is None or value is None:
            return False
        try:
            return {"gt": have > value, "ge": have >= value, "lt": have < value, "le": have <= value}[cmp]
        except TypeError:
            return False


# --------------------------------------------------------------------------------------------- the app


class EaccountingApp(VendorApp):
    """Visma eAccounting API v2 (sales part) and its OAuth token endpoint."""

    name = "eaccounting"

    def __init__(self, latency_ms: float = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # the rate-limit window's clock (tests inject a fake one)
        super().__init__(latency_ms)

    def reset_state(self) -> None:
        self.companies: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}  # access token → {"company", "client_id", "scopes", "expires"}
        self.refresh_tokens: dict[str, dict] = {}  # unspent refresh token → {"company", "client_id"}
        self.spent: set[str] = set()  # spent refresh tokens (seeds included)
        self.refreshes: dict[str, int] = {}  # company → refresh grants answered (read back by the crash test)
        self.windows: dict[tuple[str, str], collections.deque] = {}
        self.rate = {"limit": RATE_LIMIT, "window_seconds": RATE_WINDOW}
        self.scopes: dict[str, tuple[str, ...]] = {}
        self.lose = {"count": 0, "paths": None, "lost": 0}

    # -- state

    def _company(self, company: str) -> dict:
        comp = self.companies.get(company)
        if comp is not None:
            return comp
        comp = self.companies[company] = {
            "name": company,
            "customers": {},
            "articles": {},
            "orders": {},
            "invoices": {},
            "terms": {},
            "units": {},
            "codings": {},
            "vatcodes": {},
            "next_customer": 1,
            "next_order": 1,
            "next_invoice": 1,
        }
        for name, english, days, type_id, type_text in _SEED_TERMS:
            tid = _seed_id(company, "terms", name)
            comp["terms"][tid] = {
                "Id": tid,
                "Name": name,
                "NameEnglish": english,
                "NumberOfDays": days,
                "TermsOfPaymentTypeId": type_id,
                "TermsOfPaymentTypeText": type_text,
                "AvailableForSales": True,
                "AvailableForPurchase": True,
            }
        for name, code, abbreviation in _SEED_UNITS:
            uid = _seed_id(company, "unit", name)
            comp["units"][uid] = {"Id": uid, "Name": name, "Code": code, "Abbreviation": abbreviation}
        for name, english, rate, percent in _SEED_CODINGS:
            cid = _seed_id(company, "coding", name)
            comp["codings"][cid] = {
                "Id": cid,
                "Name": name,
                "NameEnglish": english,
                "Type": "Goods",
                "VatRate": rate,
                "IsActive": True,
                "VatRatePercent": percent,
                "DomesticSalesSubjectToVatAccountNumber": 8000 + int(percent * 100),
                "ChangedUtc": "2026-01-01T00:00:00Z",
            }
        for code, description, rate in _SEED_VATCODES:
            vid = _seed_id(company, "vatcode", code)
            comp["vatcodes"][vid] = {
                "Id": vid,
                "Code": code,
                "Description": description,
                "VatRate": rate,
                "RelatedAccounts": {
                    "AccountNumber1": 1500 + int(rate * 100),
                    "AccountNumber2": None,
                    "AccountNumber3": None,
                },
            }
        return comp

    def state(self) -> dict:
        return {
            "companies": {name: self._company_out(comp) for name, comp in sorted(self.companies.items())},
            "lose": dict(self.lose),
            "rate": dict(self.rate),
            "refreshes": dict(self.refreshes),
        }

    @staticmethod
    def _company_out(comp: dict) -> dict:
        keys = ("customers", "articles", "orders", "invoices", "terms", "units", "codings", "vatcodes")
        out = {key: [_jsonable(r) for r in comp[key].values()] for key in keys}
        return {"name": comp["name"], **out}

    # -- errors

    def error(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> Response:
        code = extra.pop("code", None) or ERROR_CODES.get(status, 1000 if status >= 500 else 2000)
        if status == 429 and "Try again in" not in message:  # an injected 429 (faults): Visma's wording
            seconds = self.faults.snapshot()["retry_after"]
            message = (
                f"API calls quota exceeded! maximum admitted {RATE_LIMIT} per Minute. Try again in {seconds} seconds."
            )
        body = {"ErrorCode": code, "DeveloperErrorMessage": message, "ErrorId": str(uuid.uuid4()), **extra}
        return json_response(status, body, headers)

    def _invalid(self, exc: Invalid) -> Response:
        return self.error(exc.status, "\n".join(f"{f}: {m}" for f, m in exc.problems), code=exc.code)

    # -- control

    def control_extra(self, req: Request, sub: str) -> Response | None:
        if sub == "lose":
            if req.method == "GET":
                with self.lock:
                    return json_response(200, dict(self.lose))
            if req.method != "POST":
                return self.error(405, "use GET or POST")
            body = req.json()
            if not isinstance(body, dict) or set(body) - {"count", "paths"}:
                raise BadRequest('body must be {"count": N, "paths": [path prefixes]}')
            count = body.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 10000:
                raise BadRequest("'count' must be an integer between 0 and 10000")
            paths = body.get("paths")
            if paths is not None and (not isinstance(paths, list) or not all(isinstance(p, str) for p in paths)):
                raise BadRequest("'paths' must be a list of path prefixes")
            with self.lock:
                self.lose = {"count": count, "paths": paths, "lost": self.lose["lost"]}
                return json_response(200, dict(self.lose))
        if sub == "ratelimit":
            if req.method == "POST":
                body = req.json()
                if not isinstance(body, dict) or set(body) - {"limit", "window_seconds"}:
                    raise BadRequest('body must be {"limit": N, "window_seconds": S}')
                limit = body.get("limit", RATE_LIMIT)
                window = body.get("window_seconds", RATE_WINDOW)
                if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100000:
                    raise BadRequest("'limit' must be an integer between 1 and 100000")
                if isinstance(window, bool) or not isinstance(window, int | float | Decimal) or not 0 < window <= 3600:
                    raise BadRequest("'window_seconds' must be a number of seconds between 0 and 3600")
                with self.lock:
                    self.rate = {"limit": limit, "window_seconds": float(window)}
                    self.windows.clear()
            elif req.method != "GET":
                return self.error(405, "use GET or POST")
            with self.lock:
                return json_response(200, dict(self.rate))
        if sub == "scopes":
            if req.method != "POST":
                return self.error(405, "use POST")
            body = req.json()
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("company"), str)
                or not isinstance(body.get("scopes"), list)
                or not all(isinstance(s, str) for s in body["scopes"])
            ):
                raise BadRequest('body must be {"company": "...", "scopes": ["ea:api", ...]}')
            with self.lock:
                self.scopes[body["company"]] = tuple(body["scopes"])
            return json_response(200, {"company": body["company"], "scopes": body["scopes"]})
        if sub == "tokens/expire":
            if req.method != "POST":
                return self.error(405, "use POST")
            body = req.json()
            only = body.get("company") if isinstance(body, dict) else None
            with self.lock:
                expired = [t for t, v in self.tokens.items() if only is None or v["company"] == only]
                for token in expired:
                    self.tokens.pop(token)
            return json_response(200, {"expired": len(expired)})
        match = re.fullmatch(r"companies/([^/]+)", sub)
        if match is None:
            return None
        if req.method != "GET":
            return self.error(405, "use GET")
        with self.lock:
            return json_response(200, {"company": self._company_out(self._company(unquote(match.group(1))))})

    # -- OAuth

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> Response:
        return json_response(status, {"error": error, "error_description": description})

    def _token(self, req: Request) -> Response:
        if req.method != "POST":
            return self._oauth_error(405, "invalid_request", "use POST")
        media = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            return self._oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        try:
            form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            form = {}
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = req.headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return self._oauth_error(401, "invalid_client", "malformed Basic credentials")
            client_id, client_secret = unquote(user), unquote(password)
        if not client_id or not client_secret:
            return self._oauth_error(401, "invalid_client", "client authentication failed")
        if form.get("grant_type") != "refresh_token":
            return self._oauth_error(400, "unsupported_grant_type", "only grant_type=refresh_token is supported here")
        refresh_token = form.get("refresh_token", "")
        with self.lock:
            grant = self.refresh_tokens.pop(refresh_token, None)
            if grant is None and refresh_token not in self.spent:
                seed = _SEED_REFRESH_RE.match(refresh_token)
                if seed:
                    grant = {"company": seed.group(1), "client_id": client_id}
            if grant is not None and grant["client_id"] != client_id:
                self.refresh_tokens[refresh_token] = grant  # not this client's: left as it was
                grant = None
            if grant is None:  # spent, unknown or another client's; never echo what was sent
                return self._oauth_error(400, "invalid_grant", "invalid_grant")
            self.spent.add(refresh_token)
            company = grant["company"]
            self.refreshes[company] = self.refreshes.get(company, 0) + 1
            self._company(company)
            now = time.time()
            self.tokens = {t: v for t, v in self.tokens.items() if v["expires"] > now}
            scopes = self.scopes.get(company, DEFAULT_SCOPES)
            access = secrets.token_urlsafe(32)
            self.tokens[access] = {
                "company": company,
                "client_id": client_id,
                "scopes": scopes,
                "expires": now + TOKEN_TTL,
            }
            rotated = f"ertr-{secrets.token_urlsafe(24)}"
            self.refresh_tokens[rotated] = {"company": company, "client_id": client_id}
        body = {
            "access_token": access,
            "expires_in": TOKEN_TTL,
            "token_type": "Bearer",
            "refresh_token": rotated,
            "scope": " ".join(scopes),
        }
        return json_response(200, body, {"Cache-Control": "no-store"})

    def _authenticate(self, req: Request) -> dict | None:
        auth = req.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return None
        with self.lock:
            grant = self.tokens.get(auth[7:].strip())
        if grant is None or grant["expires"] <= time.time():
            return None
        return grant

    def _rate_limit(self, client_id: str, collection: str) -> int | None:
        """None when allowed (and counted), else the seconds to wait."""
        now = self.clock()
        with self.lock:
            limit, window_s = self.rate["limit"], self.rate["window_seconds"]
            window = self.windows.setdefault((client_id, collection), collections.deque())
            while window and window[0] <= now - window_s:
                window.popleft()
            if len(window) < limit:
                window.append(now)
                return None
            return max(1, math.ceil(window[0] + window_s - now))

    # -- dispatch

    def api(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path.lower() == TOKEN_PATH:
            return self._token(req)
        if not path.startswith(API_PREFIX + "/"):
            return self.error(404, f"No HTTP resource was found that matches the request URI '{req.path}'.")
        parts = path[len(API_PREFIX) + 1 :].split("/")
        collection = parts[0]
        if collection not in COLLECTIONS or len(parts) > 2:
            return self.error(404, f"No HTTP resource was found that matches the request URI '{req.path}'.")
        grant = self._authenticate(req)
        if grant is None:
            return self.error(
                401, "Authorization has been denied for this request.", headers={"WWW-Authenticate": "Bearer"}
            )
        wait = self._rate_limit(grant["client_id"], collection)
        if wait is not None:
            limit, window_s = self.rate["limit"], self.rate["window_seconds"]
            per = "Minute" if window_s == 60 else f"{window_s:g} seconds"
            return self.error(
                429, f"API calls quota exceeded! maximum admitted {limit} per {per}. Try again in {wait} seconds."
            )
        store, model, read_scopes, write_scopes = COLLECTIONS[collection]
        needed = read_scopes if req.method == "GET" else write_scopes
        if needed and not set(needed) & set(grant["scopes"]):
            return self.error(403, f"No access to scopes. This endpoint requires any of: {', '.join(needed)}.")
        item_id = parts[1] if len(parts) == 2 else None
        try:
            resp = self._route(req, collection, item_id, grant["company"])
        except Invalid as exc:
            resp = self._invalid(exc)
        except BadRequest as exc:
            resp = self.error(400, str(exc))
        if req.method == "POST" and 200 <= resp.status < 300 and self._lose_this(path):
            resp = self.error(LOST_STATUS, "Gateway Timeout", code=1000)
        return resp

    def _lose_this(self, path: str) -> bool:
        with self.lock:
            lose = self.lose
            if lose["count"] <= 0:
                return False
            if lose["paths"] is not None and not any(path.startswith(p.rstrip("/")) for p in lose["paths"]):
                return False
            lose["count"] -= 1
            lose["lost"] += 1
            return True

    def _route(self, req: Request, collection: str, item_id: str | None, company: str) -> Response:
        store, model, _, write_scopes = COLLECTIONS[collection]
        method = req.method
        creates = {
            "customers": self._save_customer,
            "articles": self._save_article,
            "orders": self._create_order,
            "customerinvoices": self._create_invoice,
        }
        updates = {"customers": self._save_customer, "articles": self._save_article}
        if item_id is None:
            if method == "GET":
                return self._list(req, collection, company)
            if method == "POST" and collection in creates:
                body = self._body(req)
                with self.lock:
                    return creates[collection](body, self._company(company), None)
            return self.error(405, f"The requested resource does not support http method '{method}'.")
        if not _UUID_RE.match(item_id):
            return self.error(404, f"{model} {item_id} was not found (ids are GUIDs).")
        with self.lock:
            comp = self._company(company)
            rec = comp[store].get(item_id.lower())
            if rec is None:
                return self.error(404, f"{model} with id {item_id} was not found.")
            if method == "GET":
                return json_response(200, _jsonable(rec))
            if method == "PUT" and collection in updates:
                body = self._body(req)
                return updates[collection](body, comp, rec)
        return self.error(405, f"The requested resource does not support http method '{method}'.")

    @staticmethod
    def _body(req: Request) -> dict:
        media = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media not in ("application/json", "text/json"):
            raise BadRequest(f"Content-Type must be application/json, got {media or 'none'}")
        body = req.json()
        if not isinstance(body, dict):
            raise Invalid([("(body)", f"must be a JSON object, got {json_type(body)}")])
        return body

    # -- lists

    def _list(self, req: Request, collection: str, company: str) -> Response:
        store, model, _, _ = COLLECTIONS[collection]
        allowed = _ODATA | _EXTRA_PARAMS.get(collection, set())
        paged = collection != "vatcodes"
        if not paged:
            allowed -= {"$page", "$pagesize"}
        unknown = sorted(set(req.query) - allowed)
        if unknown:
            raise BadRequest(f"unknown query option(s) {unknown}; allowed here: {sorted(allowed)}")
        repeated = sorted(k for k, v in req.query.items() if len(v) > 1)
        if repeated:
            raise BadRequest(f"query option {repeated[0]!r} given {len(req.query[repeated[0]])} times")
        page = self._int_option(req, "$page", 1, 1, 2**31 - 1)
        size = self._int_option(req, "$pagesize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        with self.lock:
            comp = self._company(company)
            rows = [_jsonable(r) for r in comp[store].values()]
        fields = self._fields_of(collection, rows)
        raw_filter = req.arg("$filter")
        if raw_filter not in (None, ""):
            flt = _Filter(raw_filter, fields, model)
            rows = [r for r in rows if flt.matches(r)]
        rows = self._order(rows, req.arg("$orderby"), fields, model)
        if not paged:
            return json_response(200, rows)
        total = len(rows)
        pages = math.ceil(total / size)
        data = rows[(page - 1) * size : page * size]
        meta = {
            "CurrentPage": page,
            "PageSize": size,
            "TotalNumberOfPages": pages,
            "TotalNumberOfResults": total,
            "ServerTimeUtc": _now(),
        }
        return json_response(200, {"Meta": meta, "Data": data})

    @staticmethod
    def _fields_of(collection: str, rows: list[dict]) -> dict[str, F]:
        models = {"customers": CUSTOMER, "articles": ARTICLE, "orders": ORDER, "customerinvoices": INVOICE}
        if collection in models:
            fields = dict(models[collection])
            for name in ("Id", "ChangedUtc", "CreatedUtc", "ModifiedUtc"):
                if name in fields:
                    fields[name] = UUID if name == "Id" else S
            for name in ("InvoiceNumber",):
                if name in fields:
                    fields[name] = F("int")
            return fields
        fields = {"Id": UUID}
        for row in rows[:1]:
            for key, value in row.items():
                if key in fields:
                    continue
                if isinstance(value, bool):
                    fields[key] = BOOL
                elif isinstance(value, int | float):
                    fields[key] = F("num")
                elif isinstance(value, str):
                    fields[key] = S
        return fields

    @staticmethod
    def _int_option(req: Request, name: str, default: int, low: int, high: int) -> int:
        raw = req.arg(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"query option {name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise BadRequest(f"query option {name} must be between {low} and {high}, got {value}")
        return value

    @staticmethod
    def _order(rows: list[dict], raw: str | None, fields: dict[str, F], model: str) -> list[dict]:
        if raw in (None, ""):
            return rows
        for clause in reversed([c.strip() for c in raw.split(",")]):
            words = clause.split()
            if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
                raise BadRequest(f"$orderby: expected 'Property [asc|desc]', got {clause!r}")
            if words[0] not in fields:
                raise BadRequest(f"$orderby: could not find a property named '{words[0]}' on type '{model}'")
            key = words[0]
            rows = sorted(
                rows,
                key=lambda r, k=key: (r.get(k) is not None, r.get(k) if r.get(k) is not None else 0),
                reverse=len(words) == 2 and words[1] == "desc",
            )
        return rows

    # -- field checks

    @staticmethod
    def _check(body: dict, fields: dict[str, F], required, where: str, problems: list) -> dict:
        """The writable values of ``body`` (read-only ones dropped), problems appended in ASP.NET's words."""
        out: dict = {}
        for name in body:
            if name not in fields:
                problems.append((f"{where}{name}", f"'{name}' is not a property of this model."))
        for name, spec in fields.items():
            value = body.get(name)
            label = f"{where}{name}"
            if spec.kind == "ro":
                continue
            if value is None:
                if name in required:
                    problems.append((label, f"The {name} field is required."))
                continue
            if spec.kind in ("str",):
                if not isinstance(value, str):
                    problems.append((label, f"must be a string, got {json_type(value)} {shown(value)}"))
                    continue
                if name in required and not value.strip():
                    problems.append((label, f"The {name} field is required."))
                    continue
                if spec.max_len is not None and len(value) > spec.max_len:
                    problems.append(
                        (label, f"The field {name} must be a string with a maximum length of {spec.max_len}.")
                    )
                    continue
            elif spec.kind == "uuid":
                if not isinstance(value, str) or not _UUID_RE.match(value):
                    problems.append((label, f"must be a GUID, got {json_type(value)} {shown(value)}"))
                    continue
                value = value.lower()
            elif spec.kind == "bool":
                if not isinstance(value, bool):
                    problems.append((label, f"must be true or false, got {json_type(value)} {shown(value)}"))
                    continue
            elif spec.kind == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    problems.append((label, f"must be an integer, got {json_type(value)} {shown(value)}"))
                    continue
                if spec.enum is not None and value not in spec.enum:
                    problems.append((label, f"must be one of {list(spec.enum)}, got {value}"))
                    continue
                if (spec.minimum is not None and value < spec.minimum) or (
                    spec.maximum is not None and value > spec.maximum
                ):
                    problems.append((label, f"The field {name} must be between {spec.minimum} and {spec.maximum}."))
                    continue
            elif spec.kind == "num":
                if isinstance(value, bool) or not isinstance(value, int | Decimal):
                    problems.append((label, f"must be a number, got {json_type(value)} {shown(value)}"))
                    continue
                value = Decimal(value)
                if not value.is_finite():
                    problems.append((label, "must be a finite number"))
                    continue
                if spec.decimals is not None and value != value.quantize(Decimal(1).scaleb(-spec.decimals)):
                    problems.append((label, f"Format: {spec.decimals} decimals; got {shown(value)}"))
                    continue
                if (spec.minimum is not None and value < spec.minimum) or (
                    spec.maximum is not None and value > spec.maximum
                ):
                    problems.append((label, f"The field {name} must be between {spec.minimum} and {spec.maximum}."))
                    continue
            elif spec.kind == "date":
                match = _DATE_RE.match(value) if isinstance(value, str) else None
                try:
                    value = dt.date.fromisoformat(match.group(1)).isoformat() if match else None
                except ValueError:
                    value = None
                if value is None:
                    problems.append((label, f"must be a date YYYY-MM-DD, got {shown(body.get(name))}"))
                    continue
            elif spec.kind == "strings":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    problems.append((label, f"must be an array of strings, got {shown(value)}"))
                    continue
            elif spec.kind == "list":
                if not isinstance(value, list):
                    problems.append((label, f"must be an array, got {json_type(value)}"))
                    continue
            out[name] = value
        return out

    @staticmethod
    def _refers(comp: dict, store: str, value, field: str, what: str, problems: list) -> None:
        if value is not None and value not in comp[store]:
            problems.append((field, f"{what} {value} does not exist."))

    @staticmethod
    def _raise(problems: list, refs: list) -> None:
        if problems:
            raise Invalid(problems + refs)
        if refs:
            raise Invalid(refs, code=3000)

    # -- writes

    def _save_customer(self, body: dict, comp: dict, existing: dict | None) -> Response:
        problems: list = []
        refs: list = []
        values = self._check(body, CUSTOMER, CUSTOMER_REQUIRED, "", problems)
        for name in ("InvoiceCountryCode", "DeliveryCountryCode"):
            code = values.get(name)
            if code is not None and not re.fullmatch(r"[A-Z]{2}", code):
                problems.append((name, f'must be a 2-letter country code such as "NL", got {shown(code)}'))
        email = values.get("EmailAddress")
        if email and "@" not in email:
            problems.append(("EmailAddress", f"is not an e-mail address: {shown(email)}"))
        self._refers(comp, "terms", values.get("TermsOfPaymentId"), "TermsOfPaymentId", "Terms of payment", refs)
        number = values.get("CustomerNumber")
        if number is not None and any(
            c["CustomerNumber"] == number and c is not existing for c in comp["customers"].values()
        ):
            raise Invalid([("CustomerNumber", f"A customer with number {number} already exists.")], 4000, 409)
        self._raise(problems, refs)
        if existing is None:
            cid = str(uuid.uuid4())
            if number is None:
                while any(c["CustomerNumber"] == str(comp["next_customer"]) for c in comp["customers"].values()):
                    comp["next_customer"] += 1
                number = str(comp["next_customer"])
                comp["next_customer"] += 1
        else:
            cid = existing["Id"]
            number = number if number is not None else existing["CustomerNumber"]
        rec = {name: None for name, spec in CUSTOMER.items() if spec.kind != "ro"}
        rec.update({"EmailAddresses": [], "CustomerLabels": []})
        rec.update(values)
        rec.update(
            {
                "Id": cid,
                "CustomerNumber": number,
                "CurrencyCode": values.get("CurrencyCode") or "EUR",
                "TermsOfPayment": dict(comp["terms"][values["TermsOfPaymentId"]]),
                "PayToAccountId": None,
                "LastInvoiceDate": existing.get("LastInvoiceDate") if existing else None,
                "ChangedUtc": _now(),
            }
        )
        comp["customers"][cid] = rec
        return json_response(200 if existing else 201, _jsonable(rec))

    def _save_article(self, body: dict, comp: dict, existing: dict | None) -> Response:
        problems: list = []
        refs: list = []
        values = self._check(body, ARTICLE, ARTICLE_REQUIRED, "", problems)
        self._refers(comp, "codings", values.get("CodingId"), "CodingId", "Article account coding", refs)
        self._refers(comp, "units", values.get("UnitId"), "UnitId", "Unit", refs)
        number = values.get("Number")
        if number is not None and any(a["Number"] == number and a is not existing for a in comp["articles"].values()):
            raise Invalid([("Number", f"An article with number {number} already exists.")], 4000, 409)
        self._raise(problems, refs)
        aid = existing["Id"] if existing else str(uuid.uuid4())
        coding = comp["codings"][values["CodingId"]]
        unit = comp["units"][values["UnitId"]]
        rec = {name: None for name, spec in ARTICLE.items() if spec.kind != "ro"}
        rec.update(
            {
                "NetPrice": Decimal(0),
                "GrossPrice": Decimal(0),
                "StockBalance": Decimal(0),
                "SendToWebshop": True,
                "ArticleLabels": [],
            }
        )
        rec.update(values)
        rec.update(
            {
                "Id": aid,
                "CodingName": coding["Name"],
                "UnitName": unit["Name"],
                "UnitAbbreviation": unit["Abbreviation"],
                "StockBalanceReserved": Decimal(0),
                "StockBalanceAvailable": rec["StockBalance"],
                "ChangedUtc": _now(),
            }
        )
        comp["articles"][aid] = rec
        return json_response(200 if existing else 201, _jsonable(rec))

    def _create_order(self, body: dict, comp: dict, _existing) -> Response:
        problems: list = []
        refs: list = []
        values = self._check(body, ORDER, ORDER_REQUIRED, "", problems)
        self._refers(comp, "customers", values.get("CustomerId"), "CustomerId", "Customer", refs)
        rows = []
        total = Decimal(0)
        for i, row in enumerate(values.get("Rows") or []):
            where = f"Rows[{i}]."
            if not isinstance(row, dict):
                problems.append((f"Rows[{i}]", f"must be an object, got {json_type(row)}"))
                continue
            out = self._check(row, ORDER_ROW, ORDER_ROW_REQUIRED, where, problems)
            if out.get("IsTextRow") is True:
                if not out.get("Text"):
                    problems.append((f"{where}Text", "The Text field is required on a text row."))
            elif out.get("IsTextRow") is False:
                for name in ("ArticleId", "Quantity", "UnitPrice"):
                    if row.get(name) is None:  # a wrong type is already named by _check
                        problems.append((f"{where}{name}", f"The {name} field is required on an article row."))
                self._refers(comp, "articles", out.get("ArticleId"), f"{where}ArticleId", "Article", refs)
                if out.get("Quantity") is not None and out.get("UnitPrice") is not None:
                    discount = out.get("DiscountPercentage") or Decimal(0)
                    total += _round(out["Quantity"] * out["UnitPrice"] * (1 - discount))
            rows.append(out)
        number = values.get("Number")
        if number is not None and any(o["Number"] == number for o in comp["orders"].values()):
            raise Invalid([("Number", f"An order with number {number} already exists.")], 4000, 409)
        if not problems and not refs and values["Amount"] != total:
            problems.append(("Amount", f"{values['Amount']:.2f} is not the sum of the rows, {total:.2f}."))
        self._raise(problems, refs)
        if number is None:
            while any(o["Number"] == comp["next_order"] for o in comp["orders"].values()):
                comp["next_order"] += 1
            number = comp["next_order"]
            comp["next_order"] += 1
        oid = str(uuid.uuid4())
        for row in rows:
            row["Id"] = str(uuid.uuid4())
            article = comp["articles"].get(row.get("ArticleId") or "")
            if article is not None:
                row["ArticleNumber"] = article["Number"]
        now = _now()
        rec = {name: None for name, spec in ORDER.items() if spec.kind != "ro"}
        rec.update(values)
        rec.update(
            {
                "Id": oid,
                "Number": number,
                "Rows": rows,
                "Persons": values.get("Persons") or [],
                "CreatedUtc": now,
                "ModifiedUtc": now,
            }
        )
        comp["orders"][oid] = rec
        return json_response(201, _jsonable(rec))

    def _create_invoice(self, body: dict, comp: dict, _existing) -> Response:
        problems: list = []
        refs: list = []
        values = self._check(body, INVOICE, INVOICE_REQUIRED, "", problems)
        self._refers(comp, "customers", values.get("CustomerId"), "CustomerId", "Customer", refs)
        rows = []
        total = vat = Decimal(0)
        raw_rows = values.get("Rows")
        if raw_rows == []:
            problems.append(("Rows", "An invoice needs at least one row."))
        for i, row in enumerate(raw_rows or []):
            where = f"Rows[{i}]."
            if not isinstance(row, dict):
                problems.append((f"Rows[{i}]", f"must be an object, got {json_type(row)}"))
                continue
            out = self._check(row, INVOICE_ROW, (), where, problems)
            article = None
            if out.get("ArticleId") is None:
                if not out.get("Text"):
                    problems.append((f"{where}Text", "A row without ArticleId is a text row and needs Text."))
            else:
                self._refers(comp, "articles", out["ArticleId"], f"{where}ArticleId", "Article", refs)
                for name in ("Quantity", "UnitPrice"):
                    if out.get(name) is None and row.get(name) is None:
                        problems.append((f"{where}{name}", f"The {name} field is required on an article row."))
                article = comp["articles"].get(out["ArticleId"])
            if article is not None and out.get("Quantity") is not None and out.get("UnitPrice") is not None:
                net = _round(out["Quantity"] * out["UnitPrice"] * (1 - (out.get("DiscountPercentage") or 0)))
                rate = Decimal(0) if out.get("IsVatFree") else comp["codings"][article["CodingId"]]["VatRatePercent"]
                out.update(
                    {
                        "AmountNoVat": net,
                        "PercentVat": rate,
                        "ArticleNumber": article["Number"],
                        "Text": out.get("Text") or article["Name"],
                        "UnitId": article["UnitId"],
                    }
                )
                total += net
                vat += _round(net * rate)
            out.update({"Id": str(uuid.uuid4()), "LineNumber": i, "IsTextRow": out.get("ArticleId") is None})
            rows.append(out)
        self._raise(problems, refs)
        customer = comp["customers"][values["CustomerId"]]
        iid = str(uuid.uuid4())
        number = comp["next_invoice"]
        comp["next_invoice"] += 1
        now = _now()
        rec = {name: None for name in INVOICE}
        rec.update(values)
        rec.update(
            {
                "Id": iid,
                "InvoiceNumber": number,
                "Rows": rows,
                "CurrencyCode": customer["CurrencyCode"],
                "TotalAmount": total,
                "TotalVatAmount": vat,
                "TotalRoundings": Decimal(0),
                "RemainingAmount": total + vat,
                "CustomerNumber": customer["CustomerNumber"],
                "InvoiceCustomerName": customer["Name"],
                "InvoiceCity": customer["InvoiceCity"],
                "InvoicePostalCode": customer["InvoicePostalCode"],
                "InvoiceCountryCode": customer["InvoiceCountryCode"],
                "CustomerIsPrivatePerson": customer["IsPrivatePerson"],
                "TermsOfPaymentId": customer["TermsOfPaymentId"],
                "CustomerEmail": customer["EmailAddress"],
                "InvoiceDate": values.get("InvoiceDate") or dt.date.today().isoformat(),
                "CreatedUtc": now,
                "ModifiedUtc": now,
            }
        )
        comp["invoices"][iid] = rec
        customer["LastInvoiceDate"] = rec["InvoiceDate"]
        return json_response(201, _jsonable(rec))


def company_url(base: str, company: str) -> str:
    """The sandbox read-back URL of a company (``base`` is the server's root URL)."""
    return f"{base.rstrip('/')}/_sandbox/companies/{quote(company, safe='')}"
