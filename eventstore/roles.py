"""The database roles agentlog's parts log in as: the api's own (migration 0015), which row-
level security binds, beside the owner's that the workers and migrations use."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

API_ROLE = "agentlog_api"


def as_role(database_url: str, role: str = API_ROLE, password: str | None = None) -> str:
    """The same server and database, logged in as `role` (with `password`, if given, else none:
    for a server that trusts the connection, as the embedded one's Unix socket)."""
    params = conninfo_to_dict(database_url)
    params.pop("password", None)
    params["user"] = role
    if password is not None:
        params["password"] = password
    return make_conninfo("", **params)
