-- DO body: hands a revoked role's objects in another database to the target (revoke.go).
DECLARE
	r text := /* @role */ NULL;
	roid oid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
	g text;
BEGIN
	IF roid IS NULL THEN
		RETURN;
	END IF;
	BEGIN
		/* @hand_over */ NULL;
	EXCEPTION WHEN lock_not_available THEN
		/* @raise_others_prepared */ NULL;
		RAISE;
	END;
END
