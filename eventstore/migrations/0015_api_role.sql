-- The api on a role of its own, agentlog_api: neither owner nor superuser, so row-level
-- security binds its queries too. It reads the tenant tables of the tenant set for its
-- transaction (`SET LOCAL agentlog.tenant`, api/scope.py) and nothing else of them; it writes
-- none of them (it appends to the log). See docs/design.md, "Tenants".

-- A login role without a password: it can log in only where the server trusts the
-- connection (the embedded stack's Unix socket); a deployment gives it a password
-- (docs/operations.md, "Rotate credentials"). Roles belong to the server, not to a database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agentlog_api') THEN
        CREATE ROLE agentlog_api LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created meanwhile by another database's migration
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role agentlog_api is missing and % may not create it', current_user
            USING HINT = 'As a superuser: CREATE ROLE agentlog_api LOGIN PASSWORD ''...''; then migrate again.';
END $$;

-- An api given the owner's credentials switches to agentlog_api on each connection (weaker:
-- an injected RESET ROLE would undo it): the owner must be a member (a superuser already is).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'agentlog_api', 'MEMBER') THEN
        EXECUTE format('GRANT agentlog_api TO %I', current_user);
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING '% is not a member of agentlog_api: give the api its own login (AGENTLOG_DATABASE_URL'
                      ' as agentlog_api)', current_user;
END $$;

GRANT USAGE ON SCHEMA public TO agentlog_api;

-- The tenant tables it reads, each under a policy: the rows of the transaction's tenant, none
-- when no tenant is set. Row-level security is on for these since 0007 (deleted_sessions
-- gets it here; the owner, which writes it, is not bound there: it is not forced).
-- Not granted: consumer_offsets, dead_letters, partition_owners, analyst_logins,
-- schema_migrations, tool_outputs, and any write to a tenant table.
ALTER TABLE deleted_sessions ENABLE ROW LEVEL SECURITY;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'sessions', 'turns', 'messages', 'tool_calls', 'approvals',
                             'subagents', 'effects', 'deleted_sessions']
    LOOP
        EXECUTE format('CREATE POLICY api_tenant ON %I FOR SELECT TO agentlog_api'
                       ' USING (tenant_id = current_setting(''agentlog.tenant'', true))', t);
        EXECUTE format('GRANT SELECT ON %I TO agentlog_api', t);
    END LOOP;
END $$;

-- Tokens are looked up before the tenant is known: the columns that answer "whose token,
-- still valid?" (a sha256 cannot be turned back into its token). The fleet's registry holds
-- no tenant data; the api registers itself there.
GRANT SELECT (token_sha256, tenant_id, revoked_at, expires_at) ON api_tokens TO agentlog_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON instances TO agentlog_api;

-- The payload vault (migration 0014, where it is there): the api makes a new session's key,
-- reads keys and large payloads, and destroys a deleted session's key. Keyed by stored session
-- ids, which are per tenant; no policy here, for the vault sets no tenant (yet).
DO $$
BEGIN
    IF to_regclass('public.session_keys') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE ON session_keys TO agentlog_api;
    END IF;
    IF to_regclass('public.master_keys') IS NOT NULL THEN
        GRANT SELECT, INSERT ON master_keys TO agentlog_api;
    END IF;
    IF to_regclass('public.payload_blobs') IS NOT NULL THEN
        GRANT SELECT, INSERT, DELETE ON payload_blobs TO agentlog_api;
    END IF;
END $$;

-- The one read across tenants the api may make: the tenant of a stored session id (live,
-- deleted, or known to the ledger a moment ahead of the projection). The service token
-- starting a sub-agent learns its parent's tenant from it; a new session's id is refused
-- when any tenant holds it (only a default-tenant id can be held by another tenant: one
-- stored before ids were scoped). It answers a tenant id for a session id and nothing else. SECURITY
-- DEFINER runs it as the owner; the search path is pinned, pg_temp last.
CREATE FUNCTION session_tenant(p_session_id text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT tenant_id FROM (
        SELECT s.tenant_id, 1 AS pref FROM public.sessions s WHERE s.session_id = p_session_id
        UNION ALL
        SELECT d.tenant_id, 2 FROM public.deleted_sessions d WHERE d.session_id = p_session_id
        UNION ALL
        (SELECT e.tenant_id, 3 FROM public.effects e WHERE e.session_id = p_session_id LIMIT 1)
    ) found ORDER BY pref LIMIT 1
$$;
REVOKE ALL ON FUNCTION session_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION session_tenant(text) TO agentlog_api;
