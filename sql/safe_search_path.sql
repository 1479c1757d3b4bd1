-- The search_path the operator's statements run with (connection.go): pg_catalog
-- first, then only the schemas of the session's own path that no role but the
-- admin can put anything in, then pg_temp. A role that can create in a schema
-- on the path can plant a better-matching overload (format(text, text) beats
-- pg_catalog's format(text, VARIADIC "any")) or operator, and the admin would
-- run it. What such a role made while it could, or what revoked users left
-- there (now the receiving role's), does the same: a schema that holds a
-- function or operator of a role other than the admin or a superuser is left
-- out too. (Tables and types are not looked up by overload: another role's
-- table in a schema on the path is what an unqualified name there means.)
-- The first statement reads the session's path with qualified function calls only
-- (nothing else is looked up on that path); the rest runs with the path
-- pinned. Everything is LOCAL to the transaction.
SELECT pg_catalog.set_config('pgvault.path', CAST(pg_catalog.array_to_json(pg_catalog.current_schemas(false)) AS pg_catalog.text), true);
SET LOCAL search_path = pg_catalog, pg_temp;
SELECT set_config('search_path', concat_ws(', ', 'pg_catalog', (
	SELECT string_agg(quote_ident(n.nspname), ', ' ORDER BY s.o)
	FROM json_array_elements_text(current_setting('pgvault.path')::json) WITH ORDINALITY s(x, o)
	JOIN pg_namespace n ON n.nspname = s.x
	WHERE n.nspname <> 'pg_catalog' AND n.nspname NOT LIKE 'pg\_temp\_%'
	-- owned by the admin, a superuser, or pg_database_owner in a database the admin owns (public, 15+)
	AND (n.nspowner IN (SELECT oid FROM pg_roles WHERE rolsuper OR rolname = current_user)
		OR n.nspowner = 'pg_database_owner'::regrole
		   AND pg_get_userbyid((SELECT datdba FROM pg_database WHERE datname = current_database())) = current_user)
	-- and no one but the owner may create in it
	AND NOT EXISTS (SELECT FROM aclexplode(n.nspacl) a WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner)
	-- and it holds no routine or operator of another role (a revoked user's,
	-- now the receiving role's, among them): pg_shdepend lists, by index,
	-- what roles other than the bootstrap superuser own; pg_depend, each
	-- object's schema
	AND n.oid NOT IN (SELECT x.refobjid FROM pg_shdepend d
		JOIN pg_depend x ON x.classid = d.classid AND x.objid = d.objid AND x.refclassid = 'pg_namespace'::regclass
		WHERE d.refclassid = 'pg_authid'::regclass AND d.deptype = 'o'
		  AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND d.classid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
		  AND d.refobjid NOT IN (SELECT oid FROM pg_roles WHERE rolsuper OR rolname = current_user))),
	'pg_temp'), true)
