-- DO body: the guards of a revocation, then NOLOGIN, committed on its own (revoke.go).
DECLARE
	r text := /* @role */ NULL;
	target text := /* @target */ NULL;
	lt text := current_setting('lock_timeout');
BEGIN
	-- Wait for another revocation of this role without lock_timeout: it
	-- is bounded itself. Every other wait keeps the configured bound.
	PERFORM set_config('lock_timeout', '0', true);
	PERFORM pg_catalog.pg_advisory_xact_lock(1260, pg_catalog.hashtext(r));
	PERFORM set_config('lock_timeout', lt, true);
	-- to_regrole is an expression, not a query: nothing to plan.
	IF pg_catalog.to_regrole(pg_catalog.quote_ident(r)) IS NULL THEN
		RETURN;
	END IF;
	IF r IN (current_user, session_user) THEN
		RAISE EXCEPTION USING ERRCODE = 'object_in_use',
			MESSAGE = 'refusing to revoke the user Vault connects as';
	END IF;
	IF r = target THEN
		RAISE EXCEPTION USING ERRCODE = 'object_in_use',
			MESSAGE = 'refusing to revoke the role named in reassign_owned_to: it receives what revoked users own, and revoking it would drop what it owns itself';
	END IF;
	IF pg_catalog.to_regrole(pg_catalog.quote_ident(target)) IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('reassign_owned_to names role %I, which does not exist', target);
	END IF;
	EXECUTE format('ALTER ROLE %I NOLOGIN', r);
END
