-- DO body: the second step of a revocation, committed on its own after NOLOGIN
-- (revoke.go), and run again in each other database the user owns objects in:
-- take away everything that lets others act with the user's rights, so that
-- none of it is left while a lock holds the hand-over back. None of it waits
-- for a table lock but the rules. Nothing here fails the revocation: a
-- statement that fails is left to the hand-over (REASSIGN OWNED, DROP OWNED),
-- which does it all again; the block as a whole waits at most a few seconds.
--
-- What goes, each statement in a subtransaction of its own:
-- - the user's group memberships, and the roles that are members of it
--   (other than the admin);
-- - its SECURITY DEFINER routines become SECURITY INVOKER;
-- - every privilege others hold on its views (a view reads with its owner's
--   rights), with CASCADE for what they passed on;
-- - every privilege on other roles' objects given to the user, revoked as
--   the role that granted it (a superuser may act as any grantor; another
--   admin takes back what it granted), with CASCADE: what its rules, and
--   the triggers on its tables that another table's foreign key cascade
--   fires as their owner, would read and write with. One REVOKE per grantor
--   and kind of object, or one per object if that fails;
-- - the rules on its tables are disabled (a rule's action runs with the
--   table owner's rights, whoever fires it).
-- A statement that waits longer than 200 ms for its catalog row is tried
-- again once the user's sessions that hold a transaction are ended: what
-- usually holds such a row is the user's own open ALTER, GRANT or REVOKE.
-- After 3 s, statements wait for no lock at all.
DECLARE
	r text := /* @role */ NULL;
	roid oid := pg_catalog.to_regrole(pg_catalog.quote_ident(r));
	me_super boolean := pg_catalog.current_setting('is_superuser')::boolean;
	deadline timestamptz := pg_catalog.clock_timestamp() + interval '3 s';
	d record;
	one text;
	waited text[] := '{}';
BEGIN
	IF roid IS NULL THEN
		RETURN;
	END IF;
	PERFORM pg_catalog.set_config('lock_timeout', '200ms', true);
	FOR d IN
		WITH mine AS (
			SELECT s.classid, s.objid FROM pg_catalog.pg_shdepend s
			WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid AND s.deptype = 'o'
			  AND s.dbid = (SELECT db.oid FROM pg_catalog.pg_database db WHERE db.datname = pg_catalog.current_database())
		), given AS (
			-- The user's entries in the ACLs of other roles' objects, by kind.
			SELECT k.kind, k.name, a.grantor
			FROM pg_catalog.pg_shdepend s, LATERAL (
				SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text, c.relacl
					FROM pg_catalog.pg_class c WHERE s.classid = 'pg_catalog.pg_class'::regclass AND c.oid = s.objid AND s.objsubid = 0
				UNION ALL SELECT 'COLUMN', pg_catalog.format('(%I) ON TABLE %s', t.attname, t.attrelid::regclass), t.attacl
					FROM pg_catalog.pg_attribute t WHERE s.classid = 'pg_catalog.pg_class'::regclass AND t.attrelid = s.objid AND t.attnum = s.objsubid AND s.objsubid <> 0
				UNION ALL SELECT 'ROUTINE', p.oid::regprocedure::text, p.proacl
					FROM pg_catalog.pg_proc p WHERE s.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = s.objid
				UNION ALL SELECT 'TYPE', y.oid::regtype::text, y.typacl
					FROM pg_catalog.pg_type y WHERE s.classid = 'pg_catalog.pg_type'::regclass AND y.oid = s.objid
				UNION ALL SELECT 'SCHEMA', pg_catalog.quote_ident(n.nspname), n.nspacl
					FROM pg_catalog.pg_namespace n WHERE s.classid = 'pg_catalog.pg_namespace'::regclass AND n.oid = s.objid
				UNION ALL SELECT 'LARGE OBJECT', m.oid::text, m.lomacl
					FROM pg_catalog.pg_largeobject_metadata m WHERE s.classid = 'pg_catalog.pg_largeobject'::regclass AND m.oid = s.objid
				UNION ALL SELECT 'LANGUAGE', pg_catalog.quote_ident(l.lanname), l.lanacl
					FROM pg_catalog.pg_language l WHERE s.classid = 'pg_catalog.pg_language'::regclass AND l.oid = s.objid
				UNION ALL SELECT 'FOREIGN DATA WRAPPER', pg_catalog.quote_ident(w.fdwname), w.fdwacl
					FROM pg_catalog.pg_foreign_data_wrapper w WHERE s.classid = 'pg_catalog.pg_foreign_data_wrapper'::regclass AND w.oid = s.objid
				UNION ALL SELECT 'FOREIGN SERVER', pg_catalog.quote_ident(v.srvname), v.srvacl
					FROM pg_catalog.pg_foreign_server v WHERE s.classid = 'pg_catalog.pg_foreign_server'::regclass AND v.oid = s.objid
				UNION ALL SELECT 'DATABASE', pg_catalog.quote_ident(b.datname), b.datacl
					FROM pg_catalog.pg_database b WHERE s.classid = 'pg_catalog.pg_database'::regclass AND b.oid = s.objid
				UNION ALL SELECT 'TABLESPACE', pg_catalog.quote_ident(b.spcname), b.spcacl
					FROM pg_catalog.pg_tablespace b WHERE s.classid = 'pg_catalog.pg_tablespace'::regclass AND b.oid = s.objid
			) k(kind, name, acl), pg_catalog.aclexplode(k.acl) a
			WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid AND s.deptype = 'a'
			  AND s.dbid IN (0, (SELECT db.oid FROM pg_catalog.pg_database db WHERE db.datname = pg_catalog.current_database()))
			  AND a.grantee = roid
		)
		-- From 16 each grantor's grant of a membership is a row of its own.
		SELECT pg_catalog.format('REVOKE %s FROM %I', m.roleid::regrole, r)
			|| CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
				THEN pg_catalog.format(' GRANTED BY %s', m.grantor::regrole) ELSE '' END || ' CASCADE' AS sql,
			NULL::text[] AS parts
			FROM pg_catalog.pg_auth_members m WHERE m.member = roid
		UNION ALL
		SELECT pg_catalog.format('REVOKE %I FROM %s', r, m.member::regrole)
			|| CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 160000
				THEN pg_catalog.format(' GRANTED BY %s', m.grantor::regrole) ELSE '' END, NULL::text[]
			FROM pg_catalog.pg_auth_members m
			WHERE m.roleid = roid AND m.member NOT IN (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname IN (current_user, session_user))
		UNION ALL
		SELECT pg_catalog.format('ALTER ROUTINE %s SECURITY INVOKER', p.oid::regprocedure), NULL::text[]
			FROM mine JOIN pg_catalog.pg_proc p ON p.oid = mine.objid
			WHERE mine.classid = 'pg_catalog.pg_proc'::regclass AND p.prosecdef
		UNION ALL
		SELECT DISTINCT pg_catalog.format('REVOKE ALL ON %s FROM %s CASCADE', c.oid::regclass,
				CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END), NULL::text[]
			FROM mine JOIN pg_catalog.pg_class c ON c.oid = mine.objid, pg_catalog.aclexplode(c.relacl) a
			WHERE mine.classid = 'pg_catalog.pg_class'::regclass AND c.relkind = 'v' AND a.grantee <> roid
		UNION ALL
		SELECT pg_catalog.format('ALTER TABLE %s DISABLE RULE %I', c.oid::regclass, w.rulename), NULL::text[]
			FROM mine JOIN pg_catalog.pg_class c ON c.oid = mine.objid JOIN pg_catalog.pg_rewrite w ON w.ev_class = c.oid
			WHERE mine.classid = 'pg_catalog.pg_class'::regclass AND c.relkind IN ('r', 'p') AND w.rulename <> '_RETURN' AND w.ev_enabled <> 'D'
		UNION ALL
		-- As the grantor: SET LOCAL ROLE in the statement's string, which an
		-- error's subtransaction undoes with the rest.
		SELECT w.pre || x.stmt || w.post, ARRAY(SELECT w.pre || u.part || w.post FROM pg_catalog.unnest(x.parts) u(part))
			FROM (SELECT 'REVOKE ALL ' || CASE g.kind WHEN 'COLUMN' THEN pg_catalog.string_agg(g.name, ', ')
					ELSE 'ON ' || g.kind || ' ' || pg_catalog.string_agg(g.name, ', ') END || pg_catalog.format(' FROM %I CASCADE', r) AS stmt,
				pg_catalog.array_agg('REVOKE ALL ' || CASE g.kind WHEN 'COLUMN' THEN g.name ELSE 'ON ' || g.kind || ' ' || g.name END
					|| pg_catalog.format(' FROM %I CASCADE', r)) AS parts,
				CASE WHEN me_super AND g.grantor <> (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = current_user)
					THEN pg_catalog.pg_get_userbyid(g.grantor) END AS act_as
				FROM (SELECT DISTINCT * FROM given) g
				-- columns one by one: a grouped REVOKE names one table
				GROUP BY g.kind, g.grantor, CASE g.kind WHEN 'COLUMN' THEN g.name END) x,
			LATERAL (SELECT CASE WHEN x.act_as IS NULL THEN '' ELSE pg_catalog.format('SET LOCAL ROLE %I; ', x.act_as) END AS pre,
				CASE WHEN x.act_as IS NULL THEN '' ELSE '; SET LOCAL ROLE NONE' END AS post) w
	LOOP
		BEGIN
			EXECUTE d.sql;
		EXCEPTION WHEN OTHERS THEN
			IF SQLSTATE = '55P03' THEN
				waited := waited || d.sql;
			ELSIF d.parts IS NOT NULL AND cardinality(d.parts) > 1 THEN
				-- One object of the group (dropped meanwhile, say) failed it:
				-- each on its own.
				FOREACH one IN ARRAY d.parts LOOP
					BEGIN
						EXECUTE one;
					EXCEPTION WHEN OTHERS THEN
						IF SQLSTATE = '55P03' THEN
							waited := waited || one;
						END IF;
					END;
				END LOOP;
			END IF;
		END;
		IF pg_catalog.clock_timestamp() > deadline THEN
			-- Out of time: what is left waits for nothing.
			PERFORM pg_catalog.set_config('lock_timeout', '1ms', true);
		END IF;
	END LOOP;
	-- Rows held by the user's own open transactions: end those sessions,
	-- wait (up to 1 s) until they are gone, then try again. This runs even
	-- after the time is up, so that a user cannot use up the time with rows
	-- of its own to keep the one that matters; what is left after the time
	-- is up waits for nothing, and a row someone else holds is left for the
	-- hand-over.
	IF cardinality(waited) > 0 THEN
		BEGIN
			PERFORM pg_catalog.pg_terminate_backend(a.pid, 1000) FROM pg_catalog.pg_stat_get_activity(NULL) a
				WHERE a.usesysid = roid AND a.pid <> pg_catalog.pg_backend_pid() AND a.backend_xid IS NOT NULL;
		EXCEPTION WHEN OTHERS THEN
			NULL;
		END;
		FOREACH one IN ARRAY waited LOOP
			PERFORM pg_catalog.set_config('lock_timeout',
				greatest(1, (extract(epoch FROM deadline - pg_catalog.clock_timestamp()) * 1000)::int)::text || 'ms', true);
			BEGIN
				EXECUTE one;
			EXCEPTION WHEN OTHERS THEN
				NULL;
			END;
		END LOOP;
	END IF;
EXCEPTION WHEN OTHERS THEN
	-- The list itself could not be read (a catalog row gone under it):
	-- the hand-over does it all again. The server log says why.
	RAISE WARNING 'pgvault: the early disarming of a revoked role failed: % (SQLSTATE %)', SQLERRM, SQLSTATE;
END
