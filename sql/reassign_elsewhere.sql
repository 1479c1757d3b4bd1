-- DO body: hands a revoked role's objects in another database to the target (revoke.go).
DECLARE
	r text := /* @role */ NULL;
	target text := /* @target */ NULL;
	lt text := current_setting('lock_timeout');
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
		RETURN;
	END IF;
	/* @hand_over */ NULL;
END
