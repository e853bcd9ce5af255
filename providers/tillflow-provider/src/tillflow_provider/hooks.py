"""One Airflow hook per vendor: the connection type, its form, and a ``test_connection`` for the UI's Test button.

A hook is a thin wrapper over tillflow's own client for the vendor (``plugins/tillflow/sources|targets``):
``get_conn()`` builds that client from the connection exactly as a DAG run does, and ``test_connection()``
makes the client's cheapest authenticated call (its ``test_connection``: Ajour's locations, Planday's revenue
units, Kassatellen's login and revenue groups, Eitje's revenue groups, MplusKASSA's branches, Shiftbase's
teams, Kash.click's login, Pennylane's ``/me`` and journals, CCV's products, eAccounting's VAT codes).

``tillflow`` is imported only here, at call time: it lives in the project's ``plugins/`` folder, which
Airflow puts on ``sys.path`` in every process.

The message of a test is one line, never a secret: the connection's password and every secret extra are
masked in it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseHook

from tillflow_provider.forms import FORMS, ConnectionForm

if TYPE_CHECKING:
    from tillflow.sources.base import ConnectionInfo


class TillflowVendorHook(BaseHook):
    """Base of the vendor hooks. Subclasses set ``conn_type``; the rest comes from :data:`FORMS`."""

    conn_name_attr: ClassVar[str] = "conn_id"
    conn_type: ClassVar[str]
    default_conn_name: ClassVar[str]
    hook_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "conn_type" in cls.__dict__:  # a vendor hook, not an intermediate base
            cls.hook_name = FORMS[cls.conn_type].hook_name
            cls.default_conn_name = f"{cls.conn_type}_default"

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name

    # -- the form (declared in the provider info; these are for code that still asks the hook)

    @classmethod
    def form(cls) -> ConnectionForm:
        return FORMS[cls.conn_type]

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        behaviour = cls.form().ui_field_behaviour()
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }

    # -- the client

    def connection_info(self) -> ConnectionInfo:
        """The connection's fields as tillflow's clients read them (the same as a DAG run's)."""
        from tillflow.sources.base import ConnectionInfo

        return ConnectionInfo.from_airflow(self.conn_id, self.get_connection(self.conn_id))

    @classmethod
    def client_class(cls) -> Any:
        side, name = cls.form().client
        if side == "source":
            from tillflow.sources import get_source

            return get_source(name)
        from tillflow.targets import get_target

        return get_target(name)

    def get_conn(self) -> Any:
        """tillflow's client for this connection, built as a DAG run builds it."""
        return self.client_class().from_connection(self.connection_info())

    # -- the Test button

    def test_connection(self) -> tuple[bool, str]:
        """Check the credentials with the vendor; ``(ok, one-line message without secrets)``."""
        secrets: list[str] = []
        try:
            info = self.connection_info()
            secrets = info.secrets()
            client, note = self._client_for_test(info)
        except ImportError as exc:
            return False, (
                f"{self.hook_name}: tillflow is not importable ({exc.name or exc}); the project's plugins/ folder "
                "must be Airflow's plugins folder or on PYTHONPATH"
            )
        except _NotTested as exc:
            return False, f"{self.hook_name}: not tested: {_mask(str(exc), secrets)}"
        except Exception as exc:
            return False, _failure(self.hook_name, exc, secrets)
        try:
            items = client.test_connection()
        except Exception as exc:
            return False, _failure(self.hook_name, exc, secrets)
        finally:
            _close(client)
        return True, f"{self.hook_name}: credentials OK; {len(items)} {self.form().listed}{note}"

    def _client_for_test(self, info: ConnectionInfo) -> tuple[Any, str]:
        return self.client_class().from_connection(info), ""


def _close(client: Any) -> None:
    """Close a client's HTTP session: every source and target client has ``close()``."""
    closer = getattr(client, "close", None)
    if callable(closer):
        closer()


class _NotTested(Exception):
    """The test would do harm (spend a single-use token): not run, with the reason."""


def _mask(text: str, secrets: list[str]) -> str:
    from tillflow.masking import one_line

    return one_line(text, secrets)


def _failure(hook_name: str, exc: BaseException, secrets: list[str]) -> str:
    """One line naming what went wrong, masked."""
    from tillflow.errors import AuthError, ConfigError
    from tillflow.masking import one_line

    if isinstance(exc, AuthError):
        return f"{hook_name}: credentials refused: {one_line(str(exc), secrets)}"
    if isinstance(exc, ConfigError):
        return f"{hook_name}: connection incomplete: {one_line(str(exc), secrets)}"
    return f"{hook_name}: {one_line(exc, secrets)}"


class _RotatingTokenHook(TillflowVendorHook):
    """Pennylane and Visma eAccounting: each refresh spends the refresh token and returns a new one.

    tillflow keeps every rotation in its token store (``tillflow.oauth_tokens``) under
    ``<conn_id>:<sha256 of the connection's token>[:16]``; a DAG run reads the newest token from there.
    A test must therefore refresh through that store and under the *saved* connection's key:

    * a chain for this token exists (the connection ran, or was tested): the test uses and rotates it, under
      its own key — also when the hook sees a copy of the connection under another id (the API's Test
      button tests a transient copy with a random id);
    * no chain yet: the first refresh starts it, under the id of the saved connection holding this token
      (looked up in Airflow's metadata database when the hook runs where it is reachable);
    * no chain and no saved connection with this token (a form not saved yet): not tested, since spending
      the token would leave the connection with a token that no longer works.
    """

    conn_type: ClassVar[str]

    def _client_for_test(self, info: ConnectionInfo) -> tuple[Any, str]:
        from dataclasses import replace

        cls = self.client_class()
        # the fields first (a ConfigError names the missing one); building a client makes no call
        checked = cls.from_connection(info, token_store=_NoStore()) if _takes_store(cls) else cls.from_connection(info)
        _close(checked)
        try:
            from tillflow.tokens import DbTokenStore

            store = DbTokenStore()
            chains = _chains(store, _token_hash(info.password))
        except Exception as exc:
            raise _NotTested(
                f"the tillflow database, where rotated {self.hook_name} refresh tokens are kept, is not reachable "
                f"({type(exc).__name__}); a refresh now would spend the single-use refresh token"
            ) from None
        own = f"{info.conn_id}:{_token_hash(info.password)}"
        if own in chains:
            conn_id = info.conn_id
        elif len(chains) == 1:
            conn_id = chains[0].rsplit(":", 1)[0]
        elif chains:
            names = ", ".join(sorted(c.rsplit(":", 1)[0] for c in chains))
            raise _NotTested(f"this refresh token is in use by several connections ({names}); test one of them")
        else:
            saved = _saved_conn_ids(self.conn_type, info.password)
            if saved is None or info.conn_id in saved:
                conn_id = info.conn_id
            elif len(saved) == 1:
                conn_id = saved[0]
            else:
                raise _NotTested(
                    f"{self.hook_name} refresh tokens work once and this token is not in a saved connection yet: "
                    "save the connection first, then test it"
                )
        info = replace(info, conn_id=conn_id)
        if _takes_store(cls):
            client = cls.from_connection(info, token_store=store)
        else:  # Pennylane's client takes the process default store: give it the database's
            client = cls.from_connection(info)
            if not hasattr(client, "_token_store"):
                raise _NotTested(f"{cls.__name__} has no token store to test through")
            client._token_store = store
        return client, f" (refresh token rotated in tillflow's token store for {conn_id})"


class _NoStore:
    """A token store for validating the connection's fields only (``from_connection`` makes no call)."""

    def load(self, conn_id: str) -> None:
        return None

    def swap(self, conn_id: str, old: str | None, new: str) -> bool:
        return False


def _takes_store(cls: Any) -> bool:
    import inspect

    return "token_store" in inspect.signature(cls.from_connection).parameters


def _token_hash(token: str) -> str:
    """The suffix of tillflow's token-store key (as the Pennylane and eAccounting clients build it)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _chains(store: Any, token_hash: str) -> list[str]:
    """Token-store keys of every rotation chain started from this connection token."""
    with store._conn() as s:
        rows = s.conn.execute(
            "SELECT conn_id FROM tillflow.oauth_tokens WHERE conn_id LIKE %s ORDER BY conn_id",
            (f"%:{token_hash}",),
        ).fetchall()
        s.conn.commit()
    return [r["conn_id"] if isinstance(r, dict) else r[0] for r in rows]


def _saved_conn_ids(conn_type: str, password: str) -> list[str] | None:
    """Ids of the connections in Airflow's metadata database holding this token (any conn type tillflow reads:
    its own and ``http``); ``None`` where that database is not reachable (a task process)."""
    try:
        from airflow.models.connection import Connection
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.scalars(select(Connection).where(Connection.conn_type.in_([conn_type, "http"]))).all()
            return [c.conn_id for c in rows if c.password == password]
    except Exception:
        return None


# ----------------------------------------------------------------------------------------- the hooks


class AjourHook(TillflowVendorHook):
    """Ajour POS: Host, Database, User, Password and CompanyID."""

    conn_type = "ajour"


class PlandayHook(TillflowVendorHook):
    """Planday: client id (app id) and the portal's refresh token (it does not rotate)."""

    conn_type = "planday"


class KassatellenHook(TillflowVendorHook):
    """Kassatellen POS: the customer's e-mail and password."""

    conn_type = "kassatellen"


class EitjeHook(TillflowVendorHook):
    """Eitje: customer Api-Username/Api-Password and tillflow's partner credentials."""

    conn_type = "eitje"


class MplusKassaHook(TillflowVendorHook):
    """MplusKASSA (SOAP): endpoint, port, API ident and secret."""

    conn_type = "mpluskassa"


class ShiftbaseHook(TillflowVendorHook):
    """Shiftbase: the API key."""

    conn_type = "shiftbase"


class KashclickHook(TillflowVendorHook):
    """Kash.click POS: the shop's login and password."""

    conn_type = "kashclick"


class PennylaneHook(_RotatingTokenHook):
    """Pennylane: OAuth client id and secret, and the refresh token (rotates on every refresh)."""

    conn_type = "pennylane"


class CcvSalesposHook(TillflowVendorHook):
    """CCV Shop / SalesPOS: shop URL, API public key and secret key (HMAC)."""

    conn_type = "ccv_salespos"


class EaccountingHook(_RotatingTokenHook):
    """Visma eAccounting: OAuth client id and secret, and the refresh token (rotates and works once)."""

    conn_type = "eaccounting"


HOOKS: dict[str, type[TillflowVendorHook]] = {
    h.conn_type: h
    for h in (
        AjourHook,
        PlandayHook,
        KassatellenHook,
        EitjeHook,
        MplusKassaHook,
        ShiftbaseHook,
        KashclickHook,
        PennylaneHook,
        CcvSalesposHook,
        EaccountingHook,
    )
}
