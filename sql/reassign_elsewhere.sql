-- DO body: hands a revoked role's objects in another database to the target (revoke.go).
DECLARE
	r text := /* @role */ NULL;
	roid oid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
BEGIN
	IF roid IS NULL THEN
		RETURN;
	END IF;
	/* @hand_over */ NULL;
END
