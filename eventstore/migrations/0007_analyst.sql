-- Analysts: the role agentlog_analyst reads the tenant tables, and row-level security
-- shows it one tenant's rows only (DESIGN.md, invariant 6). See docs/sql.md, "Isolation
-- by tenant".

-- Roles belong to the server, not to a database: another database on the same server may
-- already have created it (or be creating it now, under its own advisory lock).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agentlog_analyst') THEN
        CREATE ROLE agentlog_analyst NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created meanwhile by another database's migration
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'role agentlog_analyst is missing and % may not create it', current_user
            USING HINT = 'As a superuser: CREATE ROLE agentlog_analyst NOLOGIN; then migrate again.';
END $$;

-- The application (the role running this migration) switches to the analyst role for
-- `agentlog sql --tenant`: it must be a member (a superuser already is).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'agentlog_analyst', 'MEMBER') THEN
        EXECUTE format('GRANT agentlog_analyst TO %I', current_user);
    END IF;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE WARNING '% is not a member of agentlog_analyst: `agentlog sql --tenant` will fail', current_user
            USING HINT = format('As a superuser: GRANT agentlog_analyst TO %I;', current_user);
END $$;

-- Who may read as which tenant, for analysts that log in themselves: one row per login
-- role (a member of agentlog_analyst). Only the owner writes it; analysts cannot read it.
CREATE TABLE analyst_logins (
    role_name   text PRIMARY KEY,
    tenant_id   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The tenant an analyst's query may see; NULL (no rows) when there is none.
-- - A session whose login can act as the owner (the application, a superuser) could read
--   every row anyway: its `app.tenant_id` setting is trusted (run_sql sets it, then
--   switches to agentlog_analyst for one read-only query that cannot change it: see
--   agentlog/analyst.py).
-- - Any other login (an analyst's own) gets the tenant of its analyst_logins row, keyed by
--   session_user, which neither SET ROLE nor any setting can change: an analyst's own
--   `SET app.tenant_id` is ignored.
-- SECURITY DEFINER runs it as the owner, so current_user here is the owner. The search path
-- is pinned, pg_temp last: a temporary table cannot stand in for analyst_logins.
CREATE FUNCTION analyst_tenant() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE
        WHEN pg_has_role(session_user, current_user, 'MEMBER')
            THEN nullif(current_setting('app.tenant_id', true), '')
        ELSE (SELECT l.tenant_id FROM public.analyst_logins l WHERE l.role_name = session_user)
    END
$$;
REVOKE ALL ON FUNCTION analyst_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analyst_tenant() TO agentlog_analyst;

GRANT USAGE ON SCHEMA public TO agentlog_analyst;

-- Every table with tenant rows: row-level security, forced on the owner too. The analyst
-- reads its tenant's rows; the owner (the application, whose role runs this migration)
-- keeps every right through its own permissive policy. TRUNCATE (rebuild) is not subject
-- to row-level security; INSERT ... ON CONFLICT, UPDATE and DELETE pass the owner's policy.
-- Superusers and BYPASSRLS roles skip all of it.
-- Not granted: api_tokens, consumer_offsets, dead_letters, deleted_sessions,
-- schema_migrations, analyst_logins.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'sessions', 'turns', 'messages', 'tool_calls', 'approvals',
                             'subagents', 'effects', 'tool_outputs']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY analyst_tenant ON %I FOR SELECT TO agentlog_analyst'
                       ' USING (tenant_id = (SELECT analyst_tenant()))', t);
        EXECUTE format('CREATE POLICY owner_all ON %I FOR ALL TO %I USING (true) WITH CHECK (true)',
                       t, current_user);
        EXECUTE format('GRANT SELECT ON %I TO agentlog_analyst', t);
    END LOOP;
END $$;

-- A view runs with its owner's rights unless security_invoker is set, which would bypass
-- the policies of events.
ALTER VIEW model_calls SET (security_invoker = true);
GRANT SELECT ON model_calls TO agentlog_analyst;

-- set_config() changes any setting from inside a query, `role` included: an analyst's query
-- run by the application after SET ROLE could switch back to the application's role mid-
-- statement and read through a function that runs SQL (ts_stat). In this database only
-- superusers, and roles a superuser grants it to, may call it (the application does not).
-- Only a superuser can revoke it; run_sql refuses a tenant's query while the analyst may
-- still call it.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;
    ELSE
        RAISE WARNING 'set_config() is still executable by every role: `agentlog sql --tenant` will refuse'
            USING HINT = 'As a superuser, in this database: REVOKE EXECUTE ON FUNCTION'
                         ' pg_catalog.set_config(text, text, boolean) FROM PUBLIC;';
    END IF;
END $$;
