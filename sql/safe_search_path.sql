-- The search_path the operator's statements run with (connection.go): pg_catalog
-- first, then only the schemas of the session's own path that no role but the
-- admin can create objects in, then pg_temp. A role that can create in a schema
-- on the path can plant a better-matching overload (format(text, text) beats
-- pg_catalog's format(text, VARIADIC "any")) or operator, and the admin would
-- run it. The first statement reads the session's path with qualified
-- function calls only (nothing else is looked up on that path); the rest runs
-- with the path pinned. Everything is LOCAL to the transaction.
SELECT pg_catalog.set_config('pgvault.path', CAST(pg_catalog.array_to_json(pg_catalog.current_schemas(false)) AS pg_catalog.text), true);
SET LOCAL search_path = pg_catalog, pg_temp;
SELECT set_config('search_path', concat_ws(', ', 'pg_catalog', (
	SELECT string_agg(quote_ident(n.nspname), ', ' ORDER BY s.o)
	FROM json_array_elements_text(current_setting('pgvault.path')::json) WITH ORDINALITY s(x, o)
	JOIN pg_namespace n ON n.nspname = s.x, pg_roles me
	WHERE me.rolname = current_user AND n.nspname <> 'pg_catalog' AND n.nspname NOT LIKE 'pg\_temp\_%'
	-- owned by the admin, a superuser, or pg_database_owner in a database the admin owns (public, 15+)
	AND (n.nspowner = me.oid OR n.nspowner IN (SELECT oid FROM pg_roles WHERE rolsuper)
		OR n.nspowner = 'pg_database_owner'::regrole AND me.oid = (SELECT datdba FROM pg_database WHERE datname = current_database()))
	-- and no one but the owner may create in it
	AND NOT EXISTS (SELECT FROM aclexplode(n.nspacl) a WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner)),
	'pg_temp'), true)
