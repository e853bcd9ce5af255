"""POS clients. Each implements :class:`tillflow.sources.base.SourceClient`; ``get_source`` finds one by name."""

from __future__ import annotations

from importlib import import_module

_REGISTRY = {
    "ajour": "tillflow.sources.ajour:AjourClient",
    "kassatellen": "tillflow.sources.kassatellen:KassatellenClient",
    "mpluskassa": "tillflow.sources.mpluskassa:MplusKassaClient",
    "kashclick": "tillflow.sources.kashclick:KashclickClient",
    "ccv_salespos": "tillflow.sources.ccv:CcvClient",
    "eaccounting": "tillflow.sources.eaccounting_articles:EaccountingArticles",
}


def get_source(name: str):
    """Return the client class registered under ``name`` (imported lazily)."""
    try:
        module, cls = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return getattr(import_module(module), cls)
