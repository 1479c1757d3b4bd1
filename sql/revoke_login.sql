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
	waited text[] := '{}';
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
	-- The holding role, when the user owns something and it does not exist
	-- yet, is made here, in this transaction that waits for nothing: made
	-- in the hand-over, its uncommitted row would hold up every other
	-- revocation's hand-over for as long as this one waits for a lock.
	IF create_target AND pg_catalog.to_regrole(pg_catalog.quote_ident(target)) IS NULL
		AND EXISTS (SELECT 1 FROM pg_catalog.pg_shdepend s WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass
			AND s.refobjid = roid AND s.deptype = 'o') THEN
		EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN NOINHERIT', target);
		BEGIN
			EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', target, /* @holding_comment */ NULL);
		EXCEPTION WHEN insufficient_privilege THEN
			NULL;
		END;
	END IF;
	-- NOLOGIN: a plain statement, or, after it waited too long for the
	-- user's row in pg_authid, nologin_contended.sql.
	/* @nologin */ NULL;
	-- In this transaction too, what lets others act with the user's rights,
	-- none of which waits for a table lock: its group memberships, roles
	-- that are members of it (other than the admin), its SECURITY DEFINER
	-- routines (made SECURITY INVOKER), every privilege others hold on its
	-- views (a view reads with its owner's privileges), and every privilege
	-- on other roles' objects that was given to it (what its rules, and
	-- triggers that others' foreign keys fire, would read and write with),
	-- as DROP OWNED would take them. One query, whose plan the session's
	-- function keeps (revokefn.go). A statement that waits too long for its
	-- catalog row is tried again once the user's sessions that hold a
	-- transaction are ended: what usually holds such a row is the user's
	-- own open ALTER or GRANT. A row someone else holds is left for the
	-- hand-over; a concurrent catalog update retries the pass.
	FOR obj IN
		WITH mine AS (
			SELECT s.classid, s.objid FROM pg_catalog.pg_shdepend s
			WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid AND s.deptype = 'o'
			  AND s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
		)
		SELECT pg_catalog.format('REVOKE %s FROM %I', m.roleid::regrole, r)
			FROM pg_catalog.pg_auth_members m WHERE m.member = roid
		UNION ALL
		SELECT pg_catalog.format('REVOKE %I FROM %s', r, m.member::regrole)
			|| CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
				THEN pg_catalog.format(' GRANTED BY %s', m.grantor::regrole) ELSE '' END
			FROM pg_catalog.pg_auth_members m
			WHERE m.roleid = roid AND m.member NOT IN (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname IN (current_user, session_user))
		UNION ALL
		SELECT pg_catalog.format('ALTER ROUTINE %s SECURITY INVOKER', p.oid::regprocedure)
			FROM mine JOIN pg_catalog.pg_proc p ON p.oid = mine.objid
			WHERE mine.classid = 'pg_catalog.pg_proc'::regclass AND p.prosecdef
		UNION ALL
		SELECT DISTINCT pg_catalog.format('REVOKE ALL ON %s FROM %s', c.oid::regclass,
				CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
			FROM mine JOIN pg_catalog.pg_class c ON c.oid = mine.objid, pg_catalog.aclexplode(c.relacl) a
			WHERE mine.classid = 'pg_catalog.pg_class'::regclass AND c.relkind = 'v' AND a.grantee <> roid
		UNION ALL
		SELECT 'REVOKE ALL' || g.what || pg_catalog.format(' FROM %I', r)
			FROM pg_catalog.pg_shdepend s, LATERAL (SELECT CASE s.classid
				WHEN 'pg_catalog.pg_class'::regclass THEN (SELECT CASE
					WHEN s.objsubid <> 0 THEN pg_catalog.format(' (%I) ON TABLE %s', t.attname, c.oid::regclass)
					WHEN c.relkind = 'S' THEN ' ON SEQUENCE ' || c.oid::regclass::text
					ELSE ' ON TABLE ' || c.oid::regclass::text END
					FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_attribute t ON t.attrelid = c.oid AND t.attnum = s.objsubid
					WHERE c.oid = s.objid)
				WHEN 'pg_catalog.pg_proc'::regclass THEN ' ON ROUTINE ' || s.objid::regprocedure::text
				WHEN 'pg_catalog.pg_type'::regclass THEN ' ON TYPE ' || s.objid::regtype::text
				WHEN 'pg_catalog.pg_namespace'::regclass THEN (SELECT ' ON SCHEMA ' || pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_namespace n WHERE n.oid = s.objid)
				WHEN 'pg_catalog.pg_largeobject'::regclass THEN ' ON LARGE OBJECT ' || s.objid::text
				WHEN 'pg_catalog.pg_language'::regclass THEN (SELECT ' ON LANGUAGE ' || pg_catalog.quote_ident(l.lanname) FROM pg_catalog.pg_language l WHERE l.oid = s.objid)
				WHEN 'pg_catalog.pg_foreign_data_wrapper'::regclass THEN (SELECT ' ON FOREIGN DATA WRAPPER ' || pg_catalog.quote_ident(w.fdwname) FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.oid = s.objid)
				WHEN 'pg_catalog.pg_foreign_server'::regclass THEN (SELECT ' ON FOREIGN SERVER ' || pg_catalog.quote_ident(v.srvname) FROM pg_catalog.pg_foreign_server v WHERE v.oid = s.objid)
				WHEN 'pg_catalog.pg_database'::regclass THEN (SELECT ' ON DATABASE ' || pg_catalog.quote_ident(d.datname) FROM pg_catalog.pg_database d WHERE d.oid = s.objid)
				WHEN 'pg_catalog.pg_tablespace'::regclass THEN (SELECT ' ON TABLESPACE ' || pg_catalog.quote_ident(b.spcname) FROM pg_catalog.pg_tablespace b WHERE b.oid = s.objid)
				END) g(what)
			WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid AND s.deptype = 'a' AND g.what IS NOT NULL
			  AND s.dbid IN (0, (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()))
	LOOP
		BEGIN
			EXECUTE obj;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
			IF SQLSTATE <> '55P03' AND (/* @transient */ NULL) THEN
				RAISE;
			END IF;
			IF SQLSTATE = '55P03' THEN
				waited := waited || obj;
			END IF;
		END;
	END LOOP;
	IF cardinality(waited) > 0 THEN
		BEGIN
			PERFORM pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_get_activity(NULL) a
				WHERE a.usesysid = roid AND a.pid <> pg_catalog.pg_backend_pid() AND a.backend_xid IS NOT NULL;
		EXCEPTION WHEN insufficient_privilege THEN
			NULL;
		END;
		-- Long enough for an ended backend to abort its transaction.
		PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
		FOREACH obj IN ARRAY waited LOOP
			BEGIN
				EXECUTE obj;
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
				IF SQLSTATE <> '55P03' AND (/* @transient */ NULL) THEN
					RAISE;
				END IF;
			END;
		END LOOP;
	END IF;
END
