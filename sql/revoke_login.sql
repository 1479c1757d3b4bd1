-- DO body: the first step of a revocation, committed on its own (revoke.go):
-- the guards and NOLOGIN, before anything that can wait long or fail. What
-- lets others act with the user's rights goes next, in revoke_disarm.sql's
-- transaction, so that nothing it meets can keep NOLOGIN from committing.
DECLARE
	r text := /* @role */ NULL;
	target text := /* @target */ NULL;
	create_target boolean := /* @create_target */ NULL;
	terminate boolean := /* @terminate */ NULL;
	me text := current_user;
	me_super boolean := pg_catalog.current_setting('is_superuser')::boolean;
	roid oid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
	attempt int := 0;
	holder_xid xid;
BEGIN
	IF roid IS NULL THEN
		RETURN;
	END IF;
	IF r IN (current_user, session_user) THEN
		RAISE EXCEPTION USING ERRCODE = 'object_in_use',
			MESSAGE = 'refusing to revoke the user Vault connects as';
	END IF;
	IF r = target THEN
		RAISE EXCEPTION USING ERRCODE = 'object_in_use',
			MESSAGE = pg_catalog.format('refusing to revoke %I: it receives what revoked users own (reassign_owned_to), and revoking it would hand over or drop what it holds', r);
	END IF;
	IF NOT create_target AND pg_catalog.to_regrole(pg_catalog.quote_ident(target)) IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = pg_catalog.format('reassign_owned_to names role %I, which does not exist', target);
	END IF;
	-- Nothing in this step waits long for a lock: it must commit.
	PERFORM pg_catalog.set_config('lock_timeout', '200ms', true);
	-- A non-superuser admin acts through membership in the user: to end
	-- its sessions, to revoke what it granted, and later to hand over and
	-- drop what it owns. Failing here is not fatal (revoke_role.sql tries
	-- again and says why).
	IF NOT me_super AND NOT pg_catalog.pg_has_role(me, roid, 'USAGE') THEN
		BEGIN
			IF pg_catalog.current_setting('server_version_num')::int >= 160000 THEN
				EXECUTE pg_catalog.format('GRANT %I TO %I WITH INHERIT TRUE', r, me);
			ELSE
				EXECUTE pg_catalog.format('GRANT %I TO %I', r, me);
			END IF;
		EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
			NULL;
		END;
	END IF;
	-- The holding role, when the user owns something and it does not exist
	-- yet, is made here, in this transaction that waits for nothing: made
	-- in the hand-over, its uncommitted row would hold up every other
	-- revocation's hand-over for as long as this one waits for a lock.
	IF create_target AND pg_catalog.to_regrole(pg_catalog.quote_ident(target)) IS NULL
		AND EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend s WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
			AND s.refobjid = roid AND s.deptype = 'o') THEN
		BEGIN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN NOINHERIT', target);
			BEGIN
				EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', target, /* @holding_comment */ NULL);
			EXCEPTION WHEN insufficient_privilege THEN
				NULL;
			END;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN
			NULL; -- a concurrent revocation made it: NOLOGIN must still commit
		END;
	END IF;
	-- NOLOGIN: a plain statement, or, after it waited too long for the
	-- user's row in pg_authid, nologin_contended.sql.
	/* @nologin */ NULL;
END
