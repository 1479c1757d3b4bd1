-- DO body: ends the sessions of a NOLOGIN role, hands over and drops it, or disables it (revoke.go).
DECLARE
	r text := /* @role */ NULL;
	terminate boolean := /* @terminate */ NULL;
	final boolean := /* @final */ NULL;
	me text := current_user;
	roid oid;
	g text;
	p int;
	note text := '';
	me_super boolean := pg_catalog.current_setting('is_superuser')::boolean;
	can_act boolean;
	starting int[];
	killed int[] := '{}';
	deadline timestamptz;
	prev_role text;
	cname text;
	others text[];
	disabled text;
	held text[];
BEGIN
	PERFORM set_config('pgvault.revoke_state', 'gone', true), set_config('pgvault.revoke_note', '', true),
		set_config('pgvault.revoke_others', '{}', true);
	-- Expressions rather than catalog queries where they do: every query of
	-- a DO block is planned on every run.
	roid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
	IF roid IS NULL THEN
		RETURN;
	END IF;

	IF NOT me_super AND NOT pg_catalog.pg_has_role(me, r, 'USAGE') THEN
		BEGIN
			IF current_setting('server_version_num')::int >= 160000 THEN
				-- From 16 a new grant inherits only when asked: a NOINHERIT
				-- admin, or one that createrole_self_grant made a SET-only
				-- member, could not reassign the role's objects otherwise.
				EXECUTE format('GRANT %I TO %I WITH INHERIT TRUE', r, me);
			ELSE
				EXECUTE format('GRANT %I TO %I', r, me);
			END IF;
		EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
			note := note || 'could not join the role: ' || SQLERRM || '; ';
		END;
	END IF;

	IF terminate THEN
		-- Read once, after NOLOGIN was committed: the sessions of the role,
		-- and the backends still starting, which pg_stat_activity does not
		-- show yet. In the common case both are empty and that is all.
		-- (The functions behind pg_locks and pg_stat_activity are read
		-- directly: every query of a DO block is planned on every run, and
		-- the views join more catalogs.)
		starting := ARRAY(SELECT l.pid FROM pg_catalog.pg_lock_status() l
			WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
			  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(l.pid) a
				WHERE a.usesysid IS NOT NULL OR a.backend_type <> 'client backend'));
		-- Most starting backends show up within milliseconds.
		can_act := me_super OR pg_catalog.pg_has_role(me, r, 'MEMBER');
		deadline := pg_catalog.clock_timestamp() + CASE WHEN can_act THEN interval '50 ms' ELSE interval '3 s' END;
		WHILE cardinality(starting) > 0 AND pg_catalog.clock_timestamp() < deadline LOOP
			PERFORM pg_catalog.pg_sleep(0.002);
			PERFORM pg_catalog.pg_stat_clear_snapshot();
			starting := ARRAY(SELECT l.pid FROM pg_catalog.pg_lock_status() l
				WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid = ANY (starting)
				  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(l.pid) a
				WHERE a.usesysid IS NOT NULL OR a.backend_type <> 'client backend'));
		END LOOP;
		IF cardinality(starting) > 0 THEN
			IF NOT can_act THEN
				RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
					MESSAGE = format('connections that began before logins were blocked are still starting (server pids %s) and %I cannot tell whether they belong to the user: make it a member of the user, or retry', array_to_string(starting, ', '), me);
			END IF;
			-- Acting as the role, which is now in no group, a backend can
			-- be signalled only if it runs as the role. The others are
			-- another role's or have not reached the NOLOGIN check, which
			-- they will fail.
			prev_role := current_setting('role');
			EXECUTE format('SET LOCAL ROLE %I', r);
			FOREACH p IN ARRAY starting LOOP
				BEGIN
					IF pg_catalog.pg_terminate_backend(p) THEN
						killed := killed || p;
					END IF;
				EXCEPTION WHEN insufficient_privilege THEN
					NULL;
				END;
			END LOOP;
			PERFORM set_config('role', prev_role, true);
		END IF;

		-- End every session of the role, and wait until they are gone.
		deadline := pg_catalog.clock_timestamp() + interval '10 s';
		LOOP
			EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(NULL) s
				WHERE usesysid = roid AND pid <> pg_catalog.pg_backend_pid())
			  -- pg_locks copies the whole lock table: read it only when
			  -- there are signalled starting backends to wait for.
			  AND (cardinality(killed) = 0 OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_lock_status() l
				WHERE locktype = 'virtualxid' AND pid = ANY (killed)));
			IF pg_catalog.clock_timestamp() > deadline THEN
				RAISE EXCEPTION USING ERRCODE = 'object_in_use',
					MESSAGE = 'sessions of the user are still running 10 s after being told to end: retry the revocation';
			END IF;
			BEGIN
				PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_get_activity(NULL) s
					WHERE usesysid = roid AND pid <> pg_catalog.pg_backend_pid();
			EXCEPTION WHEN insufficient_privilege THEN
				-- A member that does not inherit the role's privileges (a
				-- NOINHERIT admin) may still act as the role, whose own
				-- sessions it may end.
				IF NOT pg_catalog.pg_has_role(me, r, 'MEMBER') THEN
					RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
						MESSAGE = format('cannot end the sessions of the user: grant pg_signal_backend to %I, or let it become a member of the user (%s%s)', me, note, SQLERRM);
				END IF;
				prev_role := current_setting('role');
				EXECUTE format('SET LOCAL ROLE %I', r);
				PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_get_activity(NULL) s
					WHERE usesysid = roid AND pid <> pg_catalog.pg_backend_pid();
				PERFORM set_config('role', prev_role, true);
			END;
			PERFORM pg_catalog.pg_sleep(0.005);
			PERFORM pg_catalog.pg_stat_clear_snapshot();
		END LOOP;
	END IF;

	-- Memberships revoke_login could not take away (a row another
	-- transaction held), tried again now that the sessions are gone. One
	-- that still waits, or that a third role granted, stays: a note says
	-- so, and DROP ROLE removes it. A transient failure retries the pass.
	FOR g IN SELECT m.roleid::regrole::text FROM pg_catalog.pg_auth_members m WHERE m.member = roid LOOP
		BEGIN
			EXECUTE format('REVOKE %s FROM %I', g, r);
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
			IF SQLSTATE <> '55P03' AND (/* @transient */ NULL) THEN
				RAISE;
			END IF;
			note := note || format('could not revoke %s from the role: %s; ', g, SQLERRM);
		END;
	END LOOP;

	-- The hand-over: everything the user owns goes to the receiving role,
	-- its privileges are dropped. It must go through: a failure fails the
	-- revocation (Vault retries), since the user's objects would otherwise
	-- stay its own, under a role that is merely disabled.
	BEGIN
		/* @hand_over */ NULL;
	EXCEPTION WHEN OTHERS THEN
		-- A prepared transaction of the user holds a lock the hand-over
		-- needs: reported for the plugin to roll back, and retried.
		IF SQLSTATE = '55P03' AND EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts x WHERE x.owner = r) THEN
			/* @raise_prepared */ NULL;
		END IF;
		IF SQLSTATE = '55P03' THEN
			/* @raise_others_prepared */ NULL;
		END IF;
		RAISE;
	END;
	PERFORM set_config('pgvault.revoke_note', rtrim(note, '; '), true);
	others := ARRAY(SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend s
		JOIN pg_catalog.pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid
		  AND d.datname <> pg_catalog.current_database()
		ORDER BY 1);
	IF cardinality(others) > 0 THEN
		IF NOT final THEN
			PERFORM set_config('pgvault.revoke_state', 'other-databases', true),
				set_config('pgvault.revoke_others', others::text, true);
			RETURN;
		END IF;
		-- A database the plugin could not reach still holds the role's
		-- objects: the role stays, disabled, and the plugin says so.
		disabled := 'disabled: the role still owns objects or holds privileges in other databases';
	END IF;
	-- The drop. The role owns nothing here any more, so a role that
	-- cannot be dropped (privileges a third role gave it, which only that
	-- role may take back) is disabled and harmless: nothing runs as it.
	BEGIN
		IF disabled IS NULL THEN
			EXECUTE format('DROP ROLE %I', r);
			PERFORM set_config('pgvault.revoke_state', 'dropped', true);
		END IF;
	EXCEPTION WHEN OTHERS THEN
		-- Transient failures (transientFailures in connection.go) abort the
		-- whole transaction, which is retried. A lock another session holds
		-- on the role itself (an open GRANT to it, ALTER DEFAULT PRIVILEGES
		-- naming it, a change of one of its memberships) fails the
		-- revocation with PV002, saying so: Vault retries it.
		GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
		IF SQLSTATE = '55P03' THEN
			RAISE EXCEPTION USING ERRCODE = 'PV002',
				MESSAGE = 'dropping the role waited longer than lock_timeout for a lock another session holds on the role itself'
					|| coalesce(' (server pids ' || (SELECT string_agg(DISTINCT l.pid::text, ', ') FROM pg_catalog.pg_lock_status() l
						WHERE l.locktype = 'object' AND l.classid = 'pg_catalog.pg_authid'::regclass AND l.objid = roid
						  AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()) || ')', '')
					|| ': an open GRANT to it, ALTER DEFAULT PRIVILEGES naming it, or a change of one of its memberships';
		END IF;
		IF /* @transient */ NULL THEN
			RAISE;
		END IF;
		disabled := 'disabled: ' || SQLERRM || ' (SQLSTATE ' || SQLSTATE || ')';
	END;
	IF disabled IS NULL THEN
		RETURN;
	END IF;
	-- A disabled role must keep no member, or the member acts as it for
	-- ever. The first step removed the members it saw; one granted in a
	-- transaction still open then (by a member with ADMIN OPTION, or, on
	-- 14, by the role itself) shows only once that transaction commits. So
	-- wait for the transactions changing memberships (each holds a writer's
	-- lock on pg_auth_members until it ends; a reader's lock cannot add a
	-- member), then remove every member again; fail, for Vault to retry, if
	-- they do not end. Only those open now, and not the admin's own (other
	-- revocations and creations, which add no member to this role): the
	-- members that could grant the role were removed by the committed first
	-- step, so a transaction that begins later cannot. A prepared one of
	-- the user goes to the plugin to roll back.
	IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts x
		JOIN pg_catalog.pg_lock_status() t ON t.locktype = 'transactionid' AND t.transactionid = x.transaction AND t.pid IS NULL
		JOIN pg_catalog.pg_lock_status() l ON l.virtualtransaction = t.virtualtransaction AND l.pid IS NULL
		WHERE x.owner = r AND l.locktype = 'relation' AND l.database = 0 AND l.relation = 'pg_catalog.pg_auth_members'::regclass
		  AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')) THEN
		/* @raise_prepared */ NULL;
	END IF;
	deadline := pg_catalog.clock_timestamp() + interval '2 s';
	held := ARRAY(SELECT l.virtualtransaction FROM pg_catalog.pg_lock_status() l
		LEFT JOIN pg_catalog.pg_stat_get_activity(NULL) a ON a.pid = l.pid
		WHERE l.locktype = 'relation' AND l.database = 0 AND l.relation = 'pg_catalog.pg_auth_members'::regclass
		  AND l.granted AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')
		  AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
		  AND a.usesysid IS DISTINCT FROM (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = session_user));
	LOOP
		SELECT pg_catalog.string_agg(DISTINCT coalesce('server pid ' || l.pid,
				(SELECT pg_catalog.format('prepared transaction %L (owner %s, database %s)', x.gid, x.owner, x.database)
					FROM pg_catalog.pg_prepared_xacts x JOIN pg_catalog.pg_lock_status() t
						ON t.locktype = 'transactionid' AND t.transactionid = x.transaction AND t.pid IS NULL
					WHERE t.virtualtransaction = l.virtualtransaction LIMIT 1),
				'a prepared transaction'), ', ') INTO g FROM pg_catalog.pg_lock_status() l
			WHERE l.locktype = 'relation' AND l.database = 0 AND l.relation = 'pg_catalog.pg_auth_members'::regclass
			  AND l.virtualtransaction = ANY (held);
		EXIT WHEN g IS NULL;
		IF pg_catalog.clock_timestamp() >= deadline THEN
			RAISE EXCEPTION USING ERRCODE = 'PV003',
				MESSAGE = format('the role could not be dropped (%s), and open transactions changing role memberships (%s) did not end: a member they add would act as the role, so it is not reported revoked', disabled, g);
		END IF;
		PERFORM pg_catalog.pg_sleep(0.01);
	END LOOP;
	-- A member the admin may not remove (from 16, one granted by a role
	-- whose privileges the admin lacks) fails the revocation, naming it.
	FOR g IN SELECT pg_catalog.format('REVOKE %I FROM %s', r, m.member::regrole)
			|| CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
				THEN pg_catalog.format(' GRANTED BY %s', m.grantor::regrole) ELSE '' END || ' CASCADE'
		FROM pg_catalog.pg_auth_members m
		WHERE m.roleid = roid AND m.member NOT IN (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname IN (current_user, session_user)) LOOP
		BEGIN
			EXECUTE g;
		EXCEPTION WHEN insufficient_privilege THEN
			-- Perhaps removed by another revoke's CASCADE: asked below.
		END;
	END LOOP;
	SELECT pg_catalog.string_agg(pg_catalog.format('REVOKE %I FROM %s GRANTED BY %s CASCADE;', r, m.member::regrole, m.grantor::regrole), ' ') INTO note
		FROM pg_catalog.pg_auth_members m
		WHERE m.roleid = roid AND m.member NOT IN (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname IN (current_user, session_user));
	IF note IS NOT NULL THEN
		RAISE EXCEPTION USING ERRCODE = 'PV003',
			MESSAGE = format('the role could not be dropped (%s) and keeps members the admin may not remove, who would act as it: run as a superuser: %s', disabled, note);
	END IF;
	PERFORM set_config('pgvault.revoke_state', disabled, true);
	EXECUTE format('ALTER ROLE %I NOLOGIN VALID UNTIL %L', r, '-infinity');
END
