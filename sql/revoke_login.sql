-- DO body: the guards of a revocation, then NOLOGIN, committed on its own (revoke.go).
DECLARE
	r text := /* @role */ NULL;
	target text := /* @target */ NULL;
	lt text := current_setting('lock_timeout');
	roid oid;
	obj text;
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
	-- What lets others act as the user goes in this transaction too, before
	-- anything that can wait for a lock or fail (the hand-over disarms the
	-- rest): its SECURITY DEFINER routines here become SECURITY INVOKER,
	-- and roles that are members of it (other than the admin) leave it. Most
	-- users have neither: one cheap check through indexes (pg_proc has none
	-- on its owner, pg_shdepend one by role) keeps the query that finds
	-- them, a string run only then, from being compiled on every revocation.
	roid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend s WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
			AND s.refobjid = roid AND s.classid = 'pg_catalog.pg_proc'::regclass)
		OR EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = roid) THEN
		FOR obj IN EXECUTE $early$
			SELECT format('ALTER ROUTINE %s SECURITY INVOKER', p.oid::regprocedure)
				FROM pg_catalog.pg_shdepend s JOIN pg_catalog.pg_proc p ON p.oid = s.objid
				WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = $1 AND s.deptype = 'o'
				  AND s.classid = 'pg_catalog.pg_proc'::regclass AND p.prosecdef
				  AND s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
			UNION ALL
			SELECT format('REVOKE %I FROM %s', $2, m.member::regrole)
				|| CASE WHEN current_setting('server_version_num')::int >= 160000
					THEN format(' GRANTED BY %s', m.grantor::regrole) ELSE '' END
				FROM pg_catalog.pg_auth_members m
				WHERE m.roleid = $1 AND m.member NOT IN (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname IN (current_user, session_user))
		$early$ USING roid, r LOOP
			BEGIN
				EXECUTE obj;
			EXCEPTION WHEN OTHERS THEN
				-- Not the admin's to do yet (an admin that acts as the role
				-- only later, a membership another admin granted): the
				-- hand-over and DROP ROLE see to it, and a role left
				-- disabled says so.
				NULL;
			END;
		END LOOP;
	END IF;
END
