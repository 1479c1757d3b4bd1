-- The labelled roles the orphan reaper may revoke; the one parameter is reassign_owned_to (reap.go).
SELECT r.rolname::text, d.description, pg_catalog.now(),
	me.rolsuper OR (me.rolcreaterole AND CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
		THEN pg_catalog.pg_has_role(r.oid, 'USAGE WITH ADMIN OPTION') ELSE NOT r.rolsuper END)
FROM pg_catalog.pg_roles r
JOIN pg_catalog.pg_shdescription d ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass
CROSS JOIN (SELECT rolsuper, rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = current_user) me
WHERE d.description LIKE '%managed_by%' AND d.description LIKE /* @managed_by */ NULL
  AND r.rolname NOT IN (current_user, session_user, $1)
ORDER BY r.rolname
