-- DO body: labels a role NewUser created, unless it has a comment (labels.go).
DECLARE
	r text := /* @role */ NULL;
BEGIN
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
		WHERE rolname = r AND pg_catalog.shobj_description(oid, 'pg_authid') IS NULL) THEN
		BEGIN
			EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', r, /* @label */ NULL);
		EXCEPTION WHEN insufficient_privilege THEN
			RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
				MESSAGE = 'cannot label the new role (' || SQLERRM || '): let the connection''s user comment on the roles it creates, or set label_roles=false';
		END;
	END IF;
END
