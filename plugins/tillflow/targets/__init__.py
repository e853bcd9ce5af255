"""Target clients. Each implements :class:`tillflow.targets.base.TargetClient`; ``get_target`` finds one by name."""

from __future__ import annotations

from importlib import import_module

_REGISTRY = {
    "planday": "tillflow.targets.planday:PlandayClient",
    "eitje": "tillflow.targets.eitje:EitjeClient",
    "shiftbase": "tillflow.targets.shiftbase:ShiftbaseClient",
    "pennylane": "tillflow.targets.pennylane:PennylaneClient",
    "eaccounting": "tillflow.targets.eaccounting:EaccountingClient",
    "ccv_salespos": "tillflow.targets.ccv_products:CcvProducts",
}


def get_target(name: str):
    """Return the client class registered under ``name`` (imported lazily)."""
    try:
        module, cls = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return getattr(import_module(module), cls)
