-- DO body: moves "expires" in a role's label on renewal (labels.go).
DECLARE
	r text := /* @role */ NULL;
	e text := /* @expires */ NULL;
	c text;
	j jsonb;
	want jsonb;
	edited text;
BEGIN
	SELECT pg_catalog.shobj_description(oid, 'pg_authid') INTO c FROM pg_catalog.pg_roles WHERE rolname = r;
	IF c IS NULL OR c NOT LIKE '%managed_by%' THEN
		RETURN;
	END IF;
	BEGIN
		j := c::jsonb;
	EXCEPTION WHEN OTHERS THEN
		RETURN; -- not JSON: someone else's comment
	END;
	IF pg_catalog.jsonb_typeof(j) <> 'object' OR j->>'managed_by' IS DISTINCT FROM /* @managed_by */ NULL THEN
		RETURN;
	END IF;
	want := pg_catalog.jsonb_set(j, '{expires}', pg_catalog.to_jsonb(e));
	IF want = j THEN
		RETURN;
	END IF;
	edited := pg_catalog.regexp_replace(c, '"expires"\s*:\s*"[^"\\]*"', '"expires":"' || e || '"');
	IF edited::jsonb IS DISTINCT FROM want THEN
		edited := want::text;
	END IF;
	EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', r, edited);
END
