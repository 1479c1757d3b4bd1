-- PL/pgSQL statements for revoke_role.sql and reassign_elsewhere.sql: hand what
-- role r (oid roid) owns in the connected database to role target, and drop
-- its privileges. One read of pg_shdepend (indexed by role) says whether there
-- is anything to do: most dynamic users own nothing, and the rest is skipped.
DECLARE
	obj text;
	owns boolean;
	holds boolean;
BEGIN
	SELECT coalesce(bool_or(s.deptype = 'o'), false), count(*) > 0 INTO owns, holds
		FROM pg_catalog.pg_shdepend s
		WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid
		  AND s.dbid IN (0, (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()));
	IF owns THEN
		-- Nothing the user wrote may start running with the rights of the
		-- role that receives it. One query lists what to take away, a string
		-- run only here (in the block's text it would be compiled on every
		-- revocation, owner of anything or not), in this order:
		-- - SECURITY DEFINER routines become SECURITY INVOKER (revoke_login
		--   did so already where it could act as the role);
		-- - rules run with their relation's owner's rights whoever fires
		--   them: disabled on tables (kept for the new owner to read),
		--   dropped on views, which cannot disable one;
		-- - code that runs as a table's owner rather than as whoever uses it
		--   (index expressions and predicates, expression statistics and a
		--   range type's subtype_diff on every ANALYZE, autovacuum's too,
		--   and REINDEX; in a foreign key's cascade, the table's triggers,
		--   CHECK constraints, a domain's too, defaults and generated
		--   columns), where it uses a function, operator or type from
		--   outside pg_catalog: indexes, statistics, constraints and
		--   defaults dropped (they hold no data; the new owner can make them
		--   again once it has read the code they call), generated columns
		--   kept as plain ones, triggers disabled, statistics on such range
		--   columns turned off;
		-- - 17+: the MAINTAIN the user granted (REFRESH runs a materialized
		--   view's query as its owner; ANALYZE and REINDEX the above);
		-- - 15+: views check the privileges of whoever queries them.
		FOR obj IN EXECUTE $disarm$
			WITH mine AS (
				SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relowner = $1 AND c.relkind IN ('r', 'p', 'm', 'f')
			), outside AS (
				SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
				WHERE d.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_statistic_ext'::regclass,
						'pg_catalog.pg_constraint'::regclass, 'pg_catalog.pg_attrdef'::regclass)
				  AND CASE d.refclassid
					WHEN 'pg_catalog.pg_proc'::regclass THEN (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.refobjid)
					WHEN 'pg_catalog.pg_operator'::regclass THEN (SELECT o.oprnamespace FROM pg_catalog.pg_operator o WHERE o.oid = d.refobjid)
					WHEN 'pg_catalog.pg_type'::regclass THEN (SELECT y.typnamespace FROM pg_catalog.pg_type y WHERE y.oid = d.refobjid)
					ELSE 'pg_catalog'::regnamespace::oid END <> 'pg_catalog'::regnamespace::oid
			), ranged AS (
				SELECT a.attrelid, a.attnum, a.attname FROM pg_catalog.pg_attribute a
				JOIN pg_catalog.pg_type y ON y.oid = a.atttypid
				JOIN pg_catalog.pg_range g ON (CASE y.typtype WHEN 'd' THEN y.typbasetype ELSE y.oid END) IN (g.rngtypid, g.rngmultitypid)
				JOIN pg_catalog.pg_proc p ON p.oid = g.rngsubdiff
				WHERE a.attrelid IN (SELECT oid FROM mine) AND a.attnum > 0 AND NOT a.attisdropped
				  AND p.pronamespace <> 'pg_catalog'::regnamespace::oid
			)
			SELECT format('ALTER ROUTINE %s SECURITY INVOKER', p.oid::regprocedure)
				FROM pg_catalog.pg_proc p WHERE p.proowner = $1 AND p.prosecdef
			UNION ALL
			SELECT CASE WHEN c.relkind IN ('r', 'p')
					THEN format('ALTER TABLE %s DISABLE RULE %I', c.oid::regclass, w.rulename)
					ELSE format('DROP RULE %I ON %s', w.rulename, c.oid::regclass) END
				FROM pg_catalog.pg_rewrite w JOIN pg_catalog.pg_class c ON c.oid = w.ev_class
				WHERE c.relowner = $1 AND w.rulename <> '_RETURN' AND w.ev_enabled <> 'D'
			UNION ALL
			(
			SELECT DISTINCT CASE WHEN con.conname IS NOT NULL
					THEN format('ALTER TABLE %s DROP CONSTRAINT %I', i.indrelid::regclass, con.conname)
					ELSE format('DROP INDEX %s', i.indexrelid::regclass) END
				FROM pg_catalog.pg_index i
				LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
				WHERE i.indrelid IN (SELECT oid FROM mine)
				  -- an attached partition's index goes with its parent's
				  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)
				  AND (i.indexrelid IN (SELECT objid FROM outside WHERE classid = 'pg_catalog.pg_class'::regclass)
					OR EXISTS (SELECT 1 FROM ranged WHERE ranged.attrelid = i.indrelid AND ranged.attnum = ANY (i.indkey::int2[])))
			UNION ALL
			SELECT format('DROP STATISTICS %I.%I', n.nspname, s.stxname)
				FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
				WHERE s.stxrelid IN (SELECT oid FROM mine)
				  AND s.oid IN (SELECT objid FROM outside WHERE classid = 'pg_catalog.pg_statistic_ext'::regclass)
			UNION ALL
			SELECT CASE WHEN con.contypid <> 0
					THEN format('ALTER DOMAIN %s DROP CONSTRAINT %I', con.contypid::regtype, con.conname)
					ELSE format('ALTER TABLE %s DROP CONSTRAINT %I', con.conrelid::regclass, con.conname) END
				FROM pg_catalog.pg_constraint con
				WHERE con.contype = 'c' AND con.oid IN (SELECT objid FROM outside WHERE classid = 'pg_catalog.pg_constraint'::regclass)
				  AND (con.conrelid IN (SELECT oid FROM mine)
					OR con.contypid IN (SELECT y.oid FROM pg_catalog.pg_type y WHERE y.typowner = $1))
			UNION ALL
			SELECT format(CASE WHEN a.attgenerated <> '' THEN 'ALTER TABLE %s ALTER COLUMN %I DROP EXPRESSION'
					ELSE 'ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT' END, d.adrelid::regclass, a.attname)
				FROM pg_catalog.pg_attrdef d
				JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
				WHERE d.adrelid IN (SELECT oid FROM mine)
				  AND d.oid IN (SELECT objid FROM outside WHERE classid = 'pg_catalog.pg_attrdef'::regclass)
			UNION ALL
			SELECT format('ALTER TABLE %s DISABLE TRIGGER USER', c.oid::regclass) FROM pg_catalog.pg_class c
				WHERE c.oid IN (SELECT oid FROM mine) AND c.relkind IN ('r', 'p')
				  AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal AND tg.tgenabled <> 'D')
			UNION ALL
			SELECT format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS 0', ranged.attrelid::regclass, ranged.attname) FROM ranged
			)
			UNION ALL
			SELECT format('REVOKE MAINTAIN ON %s FROM %s', c.oid::regclass,
					CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
				FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
				WHERE current_setting('server_version_num')::int >= 170000
				  AND c.relowner = $1 AND a.privilege_type = 'MAINTAIN' AND a.grantee <> $1
			UNION ALL
			SELECT format('ALTER VIEW %s SET (security_invoker = true)', c.oid::regclass) FROM pg_catalog.pg_class c
				WHERE current_setting('server_version_num')::int >= 150000 AND c.relowner = $1 AND c.relkind = 'v'
		$disarm$ USING roid
		LOOP
			EXECUTE obj;
		END LOOP;
		EXECUTE format('REASSIGN OWNED BY %I TO %I', r, target);
	END IF;
	IF holds THEN
		EXECUTE format('DROP OWNED BY %I', r);
	END IF;
END
