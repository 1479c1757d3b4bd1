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
			IF attempt > 3 THEN
				RAISE EXCEPTION USING ERRCODE = 'object_in_use',
					MESSAGE = CASE WHEN (SELECT o.rolcanlogin FROM pg_catalog.pg_roles o WHERE o.oid = roid)
						THEN 'logins could not be blocked: a transaction that is not the user''s holds its row in pg_authid (pg_locks shows which); nothing was changed, and Vault retries the revocation'
						ELSE 'NOLOGIN could not be set again (an earlier revocation set it, and logins stay blocked): a transaction that is not the user''s holds its row in pg_authid (pg_locks shows which); Vault retries the revocation' END;
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
