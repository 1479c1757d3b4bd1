-- DO body, run only when the user owns something in the connected database
-- (hand_over.sql): hand it to the receiving role, after taking away what still
-- lets others act through it (revoke.go). Out of the revocation's own blocks,
-- so that the server compiles it only then. A receiving role it must not or
-- cannot use fails the revocation with SQLSTATE PV001 (revoke_role.sql
-- re-raises it rather than disable the user): the error says what to fix, and
-- Vault retries once it is.
DECLARE
	r text := /* @role */ NULL;
	target text := /* @target */ NULL;
	roid oid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
	obj text;
	toid oid;
	t record;
	nsp text;
	lent text[] := '{}';
	lent_db boolean := false;
	lent_fdw text[] := '{}';
	h_me text := current_user;
	h_super boolean := pg_catalog.current_setting('is_superuser')::boolean;
	cname text;
	pass int;
	owned oid[];
BEGIN
	-- The receiving role. By default it is the holding role, made here on
	-- first need: NOLOGIN, NOINHERIT, no privileges and no members but
	-- admins, so that nothing the user wrote (a trigger, an index
	-- expression, a default, a check, run by ANALYZE or a foreign key's
	-- cascade as the table's owner) ever runs with more than its rights.
	toid := pg_catalog.to_regrole(pg_catalog.quote_ident(target));
	IF toid IS NULL AND /* @create_target */ NULL THEN
		EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', target);
		toid := pg_catalog.to_regrole(pg_catalog.quote_ident(target));
		BEGIN
			EXECUTE format('COMMENT ON ROLE %I IS %L', target, /* @holding_comment */ NULL);
		EXCEPTION WHEN insufficient_privilege THEN
			NULL;
		END;
	END IF;
	IF toid IS NULL THEN
		RAISE EXCEPTION USING ERRCODE = 'undefined_object',
			MESSAGE = format('reassign_owned_to names role %I, which does not exist', target);
	END IF;
	SELECT * INTO t FROM pg_catalog.pg_roles o WHERE o.oid = toid;
	IF NOT /* @allow_privileged */ NULL AND (t.rolsuper OR target IN (current_user, session_user)
		OR pg_catalog.pg_has_role(toid, h_me, 'USAGE')) THEN
		RAISE EXCEPTION USING ERRCODE = 'PV001',
			MESSAGE = format('refusing to hand the user''s objects to %I: it is a superuser or has the rights of %I, so code the user wrote would run with them; name an unprivileged NOLOGIN role in reassign_owned_to, or set allow_privileged_reassign', target, h_me);
	END IF;
	IF /* @create_target */ NULL AND (t.rolcanlogin OR t.rolsuper OR t.rolcreaterole OR t.rolcreatedb OR t.rolreplication OR t.rolbypassrls
		OR EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.member = toid)
		OR EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles o ON o.oid = m.member
			WHERE m.roleid = toid AND NOT (o.rolsuper OR o.rolcreaterole))) THEN
		RAISE EXCEPTION USING ERRCODE = 'PV001',
			MESSAGE = format('refusing to hand the user''s objects to the holding role %I: it must stay NOLOGIN, without attributes or memberships, and with no members but admins; fix it (\du %I), then retry', target, target);
	END IF;
	-- REASSIGN OWNED needs the rights of the user (revoke_login made the
	-- admin its member): a NOINHERIT admin has none on PostgreSQL 15 and
	-- older, where a grant cannot say otherwise.
	IF NOT h_super AND NOT pg_catalog.pg_has_role(h_me, roid, 'USAGE') THEN
		RAISE EXCEPTION USING ERRCODE = 'PV001',
			MESSAGE = format('cannot hand the user''s objects over: %I does not have the user''s privileges, being NOINHERIT: ALTER ROLE %I INHERIT, then Vault retries the revocation', h_me, h_me);
	END IF;
	-- REASSIGN OWNED needs the rights of the receiving role too.
	IF NOT h_super AND NOT pg_catalog.pg_has_role(h_me, toid, 'USAGE') THEN
		BEGIN
			IF pg_catalog.current_setting('server_version_num')::int >= 160000 THEN
				EXECUTE format('GRANT %I TO %I WITH INHERIT TRUE', target, h_me);
			ELSE
				EXECUTE format('GRANT %I TO %I', target, h_me);
			END IF;
		EXCEPTION WHEN insufficient_privilege THEN
			-- From 16, only a role with ADMIN OPTION on it may grant it: a
			-- holding role another admin (or a superuser) made first.
			RAISE EXCEPTION USING ERRCODE = 'PV001',
				MESSAGE = format('cannot hand the user''s objects to %I: %I is not a superuser and may not join it (%s); as a superuser, GRANT %I TO %I WITH ADMIN OPTION, or name in reassign_owned_to an unprivileged role %I administers', target, h_me, SQLERRM, target, h_me, h_me);
		END;
	END IF;
	-- Twice: before REASSIGN OWNED, and after it, when nothing acting as
	-- the user (a call of its SECURITY DEFINER routine in another login's
	-- session, which no revocation can end) may change the objects any
	-- more. What such a call re-armed while the hand-over waited for a lock
	-- is taken away then, from what the user owned just before (looked up
	-- by oid: the receiving role may own a great many things, and what
	-- other revoked users left is not this revocation's to wait for).
	FOR pass IN 1..2 LOOP
		IF pass = 2 THEN
			owned := ARRAY(SELECT s.objid FROM pg_catalog.pg_shdepend s
				WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid AND s.deptype = 'o'
				  AND s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()));
			-- A non-superuser may give an object that lives in a schema (a
			-- relation, routine, type, operator, statistics object, collation,
			-- conversion, text search configuration or dictionary, operator class
			-- or family) only to a role that may create in that schema: the
			-- holding role gets CREATE on those schemas for the length of
			-- REASSIGN OWNED, in this transaction, and never visibly to anyone
			-- else.
			IF NOT h_super THEN
				FOR nsp IN SELECT DISTINCT n.nspname FROM pg_catalog.pg_shdepend s
					JOIN LATERAL (
						SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE s.classid = 'pg_catalog.pg_class'::regclass AND c.oid = s.objid
						UNION ALL SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE s.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = s.objid
						UNION ALL SELECT y.typnamespace FROM pg_catalog.pg_type y WHERE s.classid = 'pg_catalog.pg_type'::regclass AND y.oid = s.objid
						UNION ALL SELECT o.oprnamespace FROM pg_catalog.pg_operator o WHERE s.classid = 'pg_catalog.pg_operator'::regclass AND o.oid = s.objid
						UNION ALL SELECT x.stxnamespace FROM pg_catalog.pg_statistic_ext x WHERE s.classid = 'pg_catalog.pg_statistic_ext'::regclass AND x.oid = s.objid
						UNION ALL SELECT l.collnamespace FROM pg_catalog.pg_collation l WHERE s.classid = 'pg_catalog.pg_collation'::regclass AND l.oid = s.objid
						UNION ALL SELECT v.connamespace FROM pg_catalog.pg_conversion v WHERE s.classid = 'pg_catalog.pg_conversion'::regclass AND v.oid = s.objid
						UNION ALL SELECT f.cfgnamespace FROM pg_catalog.pg_ts_config f WHERE s.classid = 'pg_catalog.pg_ts_config'::regclass AND f.oid = s.objid
						UNION ALL SELECT d.dictnamespace FROM pg_catalog.pg_ts_dict d WHERE s.classid = 'pg_catalog.pg_ts_dict'::regclass AND d.oid = s.objid
						UNION ALL SELECT c.opcnamespace FROM pg_catalog.pg_opclass c WHERE s.classid = 'pg_catalog.pg_opclass'::regclass AND c.oid = s.objid
						UNION ALL SELECT f.opfnamespace FROM pg_catalog.pg_opfamily f WHERE s.classid = 'pg_catalog.pg_opfamily'::regclass AND f.oid = s.objid
					) obj(ns) ON true
					JOIN pg_catalog.pg_namespace n ON n.oid = obj.ns
					WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid AND s.deptype = 'o'
					  AND s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
					  AND NOT pg_catalog.has_schema_privilege(toid, n.oid, 'CREATE')
				LOOP
					EXECUTE format('GRANT CREATE ON SCHEMA %I TO %I', nsp, target);
					lent := lent || nsp;
				END LOOP;
				-- Likewise a publication only to a role that may create in
				-- the database, and a foreign server only to one that may
				-- use its wrapper.
				IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication b WHERE b.pubowner = roid)
					AND NOT pg_catalog.has_database_privilege(toid, pg_catalog.current_database(), 'CREATE') THEN
					EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', pg_catalog.current_database(), target);
					lent_db := true;
				END IF;
				FOR nsp IN SELECT DISTINCT w.fdwname FROM pg_catalog.pg_foreign_server v
					JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = v.srvfdw
					WHERE v.srvowner = roid AND NOT pg_catalog.has_foreign_data_wrapper_privilege(toid, w.oid, 'USAGE')
				LOOP
					EXECUTE format('GRANT USAGE ON FOREIGN DATA WRAPPER %I TO %I', nsp, target);
					lent_fdw := lent_fdw || nsp;
				END LOOP;
			END IF;
			EXECUTE format('REASSIGN OWNED BY %I TO %I', r, target);
			FOREACH nsp IN ARRAY lent LOOP
				EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM %I', nsp, target);
			END LOOP;
			IF lent_db THEN
				EXECUTE format('REVOKE CREATE ON DATABASE %I FROM %I', pg_catalog.current_database(), target);
			END IF;
			FOREACH nsp IN ARRAY lent_fdw LOOP
				EXECUTE format('REVOKE USAGE ON FOREIGN DATA WRAPPER %I FROM %I', nsp, target);
			END LOOP;
		END IF;
		-- What still lets others act through the user's objects once they are
		-- the holding role's (which owns every revoked user's leftovers). One
		-- query lists it, a string run only here (in the block's text it
		-- would be compiled on every revocation, owner of anything or not):
		-- - SECURITY DEFINER routines become SECURITY INVOKER (revoke_login
		--   did so already where it could);
		-- - rules run with their table's owner's rights whoever fires them:
		--   disabled (kept for the new owner to read);
		-- - views read with their owner's rights: the privileges others hold
		--   on them are revoked (revoke_login did so already where it could);
		-- - 17+: the MAINTAIN the user granted (REFRESH runs a materialized
		--   view's query as its owner).
		FOR obj IN EXECUTE $disarm$
			WITH mine AS (
				SELECT s.classid, s.objid FROM pg_catalog.pg_shdepend s
				WHERE $2 IS NULL AND s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = $1 AND s.deptype = 'o'
				  AND s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
				UNION ALL
				SELECT 'pg_catalog.pg_proc'::regclass, p.oid FROM pg_catalog.pg_proc p WHERE p.oid = ANY ($2) AND p.proowner = $1
				UNION ALL
				SELECT 'pg_catalog.pg_class'::regclass, c.oid FROM pg_catalog.pg_class c WHERE c.oid = ANY ($2) AND c.relowner = $1
			), rels AS (
				SELECT c.oid, c.relkind, c.relacl FROM mine JOIN pg_catalog.pg_class c ON c.oid = mine.objid
				WHERE mine.classid = 'pg_catalog.pg_class'::regclass
			)
			SELECT pg_catalog.format('ALTER ROUTINE %s SECURITY INVOKER', p.oid::regprocedure)
				FROM mine JOIN pg_catalog.pg_proc p ON p.oid = mine.objid
				WHERE mine.classid = 'pg_catalog.pg_proc'::regclass AND p.prosecdef
			UNION ALL
			SELECT pg_catalog.format('ALTER TABLE %s DISABLE RULE %I', rels.oid::regclass, w.rulename)
				FROM rels JOIN pg_catalog.pg_rewrite w ON w.ev_class = rels.oid
				WHERE rels.relkind IN ('r', 'p') AND w.rulename <> '_RETURN' AND w.ev_enabled <> 'D'
			UNION ALL
			SELECT DISTINCT pg_catalog.format('REVOKE ALL ON %s FROM %s CASCADE', rels.oid::regclass,
					CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
				FROM rels, pg_catalog.aclexplode(rels.relacl) a WHERE rels.relkind = 'v' AND a.grantee <> $1
			UNION ALL
			SELECT pg_catalog.format('REVOKE MAINTAIN ON %s FROM %s CASCADE', rels.oid::regclass,
					CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
				FROM rels, pg_catalog.aclexplode(rels.relacl) a
				WHERE pg_catalog.current_setting('server_version_num')::int >= 170000
				  AND a.privilege_type = 'MAINTAIN' AND a.grantee <> $1
		$disarm$ USING CASE pass WHEN 1 THEN roid ELSE toid END, CASE pass WHEN 2 THEN owned END
		LOOP
			-- For the holding role, which has no rights to lend, each of these
			-- is a precaution: one that fails (a privilege only a third role
			-- may revoke) must not keep the hand-over from going through. For
			-- another reassign_owned_to it is the defence, and fails it.
			BEGIN
				EXECUTE obj;
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
				IF NOT /* @create_target */ NULL OR /* @transient */ NULL THEN
					RAISE;
				END IF;
			END;
		END LOOP;
	END LOOP;
END
