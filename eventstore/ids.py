"""Deterministic identifiers: every id is derived from its cause, never drawn at random."""

from __future__ import annotations

import uuid

# Fixed namespace: changing it would change every event id ever derived.
NAMESPACE = uuid.UUID("6f1c2d3e-4a5b-5c6d-8e7f-0a1b2c3d4e5f")


def derive(key: str) -> uuid.UUID:
    """The UUID v5 of an idempotency key."""
    return uuid.uuid5(NAMESPACE, key)


def turn_id_for(session_id: str, idempotency_key: str) -> str:
    """The turn a user message starts, derived from the client's idempotency key."""
    return str(derive(f"{session_id}/turn/{idempotency_key}"))


def event_key(session_id: str, *parts: object) -> str:
    """The idempotency key of an event caused inside a session: session/turn/step/kind/index."""
    return "/".join([session_id, *(str(p) for p in parts)])


# Session ids belong to their tenant: the id a client chose is stored (in the log, every
# table, the ledger) as `tenant~id`, so that two tenants may choose the same id and neither
# can tell whether the other did. `~` is in no client id (api.routes.common) and no tenant id
# (eventstore.tenants), so the scoped id names exactly one (tenant, id) pair. The default
# tenant's ids (a stack without tokens, the development token) are stored as given: its
# sessions keep the ids they had before ids were scoped, and no other tenant's id can take
# that form.
SCOPE = "~"
DEFAULT_TENANT = "default"


def scoped_session_id(tenant_id: str, client_id: str) -> str:
    """The session id stored for the tenant's client-chosen id."""
    return client_id if tenant_id == DEFAULT_TENANT else f"{tenant_id}{SCOPE}{client_id}"


def client_session_id(tenant_id: str, session_id: str) -> str:
    """The id the tenant knows a stored session id by (ids stored before scoping are as given)."""
    prefix = f"{tenant_id}{SCOPE}"
    return session_id.removeprefix(prefix) if tenant_id != DEFAULT_TENANT else session_id
