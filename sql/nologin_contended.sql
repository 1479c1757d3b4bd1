-- PL/pgSQL for revoke_login.sql's @nologin after a plain NOLOGIN waited too long
-- (revoke.go). What usually holds the user's row in pg_authid is a
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
			-- The transaction that holds the row may act as the user without
			-- being its session: another login calling the user's SECURITY
			-- DEFINER function that changes the user's password. A superuser
			-- admin reads which transaction it is (the row's xmax) and ends
			-- its backend, unless a superuser's, or hands a prepared one to
			-- the plugin to roll back.
			IF me_super THEN
				holder_xid := (SELECT x.xmax FROM pg_catalog.pg_authid x WHERE x.oid = roid);
				PERFORM pg_catalog.pg_terminate_backend(l.pid) FROM pg_catalog.pg_lock_status() l
					JOIN pg_catalog.pg_stat_get_activity(NULL) a ON a.pid = l.pid
					WHERE l.locktype = 'transactionid' AND l.granted AND l.transactionid = holder_xid
					  AND l.pid <> pg_catalog.pg_backend_pid()
					  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles o WHERE o.oid = a.usesysid AND o.rolsuper);
				IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts x JOIN pg_catalog.pg_roles o ON o.rolname = x.owner
					WHERE x.transaction = holder_xid AND NOT o.rolsuper) THEN
					RAISE EXCEPTION USING ERRCODE = 'object_in_use',
						MESSAGE = 'a prepared transaction that changed the user''s role row holds it',
						HINT = /* @prepared_hint */ NULL,
						DETAIL = (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(x.database, x.gid))::text
							FROM pg_catalog.pg_prepared_xacts x WHERE x.transaction = holder_xid);
				END IF;
			END IF;
			IF attempt > 3 THEN
				RAISE EXCEPTION USING ERRCODE = 'object_in_use',
					MESSAGE = CASE WHEN (SELECT o.rolcanlogin FROM pg_catalog.pg_roles o WHERE o.oid = roid)
						THEN 'logins could not be blocked: a transaction that is not the user''s holds its row in pg_authid'
						ELSE 'NOLOGIN could not be set again (an earlier revocation set it, and logins stay blocked): a transaction that is not the user''s holds its row in pg_authid' END
						|| coalesce(' (server pids with changes to pg_authid: ' || (SELECT pg_catalog.string_agg(DISTINCT l.pid::text, ', ') FROM pg_catalog.pg_lock_status() l
							WHERE l.locktype = 'relation' AND l.relation = 'pg_catalog.pg_authid'::regclass AND l.mode = 'RowExclusiveLock'
							  AND l.pid IS NOT NULL AND l.pid <> pg_catalog.pg_backend_pid()) || ')', '')
						|| CASE WHEN (SELECT o.rolcanlogin FROM pg_catalog.pg_roles o WHERE o.oid = roid)
							THEN '; nothing was changed, and Vault retries the revocation' ELSE '; Vault retries the revocation' END;
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
	END LOOP
