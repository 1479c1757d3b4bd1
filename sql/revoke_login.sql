-- DO body: the first step of a revocation, committed on its own (revoke.go):
-- the guards, NOLOGIN, and everything that lets others act with the user's
-- rights, before anything that can wait long or fail.
DECLARE
	r text := /* @role */ NULL;
	target text := /* @target */ NULL;
	create_target boolean := /* @create_target */ NULL;
	terminate boolean := /* @terminate */ NULL;
	me text := current_user;
	me_super boolean := pg_catalog.current_setting('is_superuser')::boolean;
	roid oid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
	attempt int := 0;
	obj text;
	cname text;
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
	-- NOLOGIN. What usually holds the user's row in pg_authid is a
	-- transaction of the user itself (ALTER ROLE CURRENT_USER PASSWORD left
	-- open): its sessions that hold a transaction are ended, and NOLOGIN
	-- tried again at once, so that it waits first in line for the row and
	-- a client that reconnects cannot take it back. A prepared transaction
	-- of the user cannot be ended that way; it is reported for the plugin
	-- to roll back.
	LOOP
		BEGIN
			EXECUTE pg_catalog.format('ALTER ROLE %I NOLOGIN', r);
			EXIT;
		EXCEPTION WHEN lock_not_available THEN
			attempt := attempt + 1;
			IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts x WHERE x.owner = r) THEN
				/* @raise_prepared */ NULL;
			END IF;
			IF attempt > 3 THEN
				RAISE EXCEPTION USING ERRCODE = 'object_in_use',
					MESSAGE = 'logins could not be blocked: a transaction that is not the user''s holds its row in pg_authid (pg_locks shows which); nothing was changed, and Vault retries the revocation';
			END IF;
			BEGIN
				PERFORM pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
					WHERE a.usesysid = roid AND a.pid <> pg_catalog.pg_backend_pid() AND (terminate OR a.backend_xid IS NOT NULL);
			EXCEPTION WHEN insufficient_privilege THEN
				RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
					MESSAGE = pg_catalog.format('logins could not be blocked: a session of the user holds a lock on its role, and %I may not end it: grant pg_signal_backend to %I, or let it become a member of the user', me, me);
			END;
			-- Long enough for an ended backend to abort its transaction.
			PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
		END;
	END LOOP;
	PERFORM pg_catalog.set_config('lock_timeout', '200ms', true);
	-- In this transaction too, what lets others act with the user's rights:
	-- its group memberships, roles that are members of it (other than the
	-- admin), its SECURITY DEFINER routines (made SECURITY INVOKER), and
	-- every privilege others hold on its views (a view reads with its
	-- owner's privileges). None of these waits for a table lock. Most users
	-- own nothing and have no members: one cheap check through indexes
	-- keeps the query that finds them, a string run only then, from being
	-- compiled on every revocation.
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.member = roid OR m.roleid = roid)
		OR EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend s WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
			AND s.refobjid = roid AND s.deptype = 'o' AND s.classid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_class'::regclass)) THEN
		FOR obj IN EXECUTE $early$
			WITH mine AS (
				SELECT s.classid, s.objid FROM pg_catalog.pg_shdepend s
				WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = $1 AND s.deptype = 'o'
				  AND s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
			), v16 AS (
				SELECT pg_catalog.current_setting('server_version_num')::int >= 160000 AS yes
			)
			SELECT pg_catalog.format('REVOKE %s FROM %I', m.roleid::regrole, $2)
				|| CASE WHEN v16.yes THEN pg_catalog.format(' GRANTED BY %s', m.grantor::regrole) ELSE '' END
				FROM pg_catalog.pg_auth_members m, v16 WHERE m.member = $1
			UNION ALL
			SELECT pg_catalog.format('REVOKE %I FROM %s', $2, m.member::regrole)
				|| CASE WHEN v16.yes THEN pg_catalog.format(' GRANTED BY %s', m.grantor::regrole) ELSE '' END
				FROM pg_catalog.pg_auth_members m, v16
				WHERE m.roleid = $1 AND m.member NOT IN (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname IN (current_user, session_user))
			UNION ALL
			SELECT pg_catalog.format('ALTER ROUTINE %s SECURITY INVOKER', p.oid::regprocedure)
				FROM mine JOIN pg_catalog.pg_proc p ON p.oid = mine.objid
				WHERE mine.classid = 'pg_catalog.pg_proc'::regclass AND p.prosecdef
			UNION ALL
			SELECT DISTINCT pg_catalog.format('REVOKE ALL ON %s FROM %s', c.oid::regclass,
					CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
				FROM mine JOIN pg_catalog.pg_class c ON c.oid = mine.objid, pg_catalog.aclexplode(c.relacl) a
				WHERE mine.classid = 'pg_catalog.pg_class'::regclass AND c.relkind = 'v' AND a.grantee <> $1
		$early$ USING roid, r LOOP
			BEGIN
				EXECUTE obj;
			EXCEPTION WHEN OTHERS THEN
				-- Not the admin's to do (a membership another admin granted),
				-- or held back by a lock: revoke_role.sql and the hand-over
				-- try again, and a role left disabled says so. A concurrent
				-- catalog update retries the pass.
				GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
				IF SQLSTATE <> '55P03' AND (/* @transient */ NULL) THEN
					RAISE;
				END IF;
			END;
		END LOOP;
	END IF;
END
