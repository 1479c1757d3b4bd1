-- DO body: labels a role NewUser created (labels.go): only a role that exists
-- and has no comment, and never at the cost of the creation.
DECLARE
	r text := /* @role */ NULL;
BEGIN
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles
		WHERE rolname = r AND pg_catalog.shobj_description(oid, 'pg_authid') IS NULL) THEN
		BEGIN
			EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', r, /* @label */ NULL);
		EXCEPTION WHEN OTHERS THEN
			-- The role and its grants are what the request is for; the label
			-- only describes them.
			RAISE WARNING USING
				MESSAGE = pg_catalog.format('role %I was created but not labelled: %s (SQLSTATE %s)', r, SQLERRM, SQLSTATE),
				HINT = 'let the connection''s user comment on the roles it creates, or set label_roles=false';
		END;
	END IF;
END
