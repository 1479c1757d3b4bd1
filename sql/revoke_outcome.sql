-- The outcome of revoke_role.sql, its note, and the other databases holding the role's objects (revoke.go).
SELECT current_setting('pgvault.revoke_state', true),
	coalesce(current_setting('pgvault.revoke_note', true), ''),
	CASE WHEN current_setting('pgvault.revoke_state', true) = 'other-databases' THEN
	ARRAY(SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
		  AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = /* @role */ NULL)
		  AND d.datname <> current_database()
		ORDER BY 1)
	ELSE '{}'::text[] END
