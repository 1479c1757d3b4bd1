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
		-- What the user wrote must not gain the rights of the role that
		-- receives it: its SECURITY DEFINER routines become SECURITY INVOKER,
		-- and (15+) its views check the privileges of whoever queries them.
		FOR obj IN SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
			WHERE p.proowner = roid AND p.prosecdef LOOP
			EXECUTE format('ALTER ROUTINE %s SECURITY INVOKER', obj);
		END LOOP;
		-- Rules run with the rights of their relation's owner, whoever fires
		-- them. Before its tables and views change hands, the user's rules
		-- are disabled on tables (kept, for the new owner to read) and
		-- dropped on views, which cannot disable one.
		FOR obj IN SELECT CASE WHEN c.relkind IN ('r', 'p')
				THEN format('ALTER TABLE %s DISABLE RULE %I', c.oid::regclass, w.rulename)
				ELSE format('DROP RULE %I ON %s', w.rulename, c.oid::regclass) END
			FROM pg_catalog.pg_rewrite w JOIN pg_catalog.pg_class c ON c.oid = w.ev_class
			WHERE c.relowner = roid AND w.rulename <> '_RETURN' AND w.ev_enabled <> 'D' LOOP
			EXECUTE obj;
		END LOOP;
		-- Index expressions and predicates, and expression statistics, run as
		-- their table's owner whenever it is analyzed (autovacuum does so by
		-- itself) or reindexed: those that use a function, operator or type
		-- from outside pg_catalog are dropped. They hold no data, and the new
		-- owner can build them again once it has read the code they call.
		FOR obj IN SELECT CASE WHEN con.conname IS NOT NULL
				THEN format('ALTER TABLE %s DROP CONSTRAINT %I', t.oid::regclass, con.conname)
				ELSE format('DROP INDEX %s', i.indexrelid::regclass) END
			FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
			LEFT JOIN pg_catalog.pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = t.oid
			WHERE t.relowner = roid AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
			  AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass
				AND d.objid = i.indexrelid AND CASE d.refclassid
					WHEN 'pg_catalog.pg_proc'::regclass THEN (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.refobjid)
					WHEN 'pg_catalog.pg_operator'::regclass THEN (SELECT o.oprnamespace FROM pg_catalog.pg_operator o WHERE o.oid = d.refobjid)
					WHEN 'pg_catalog.pg_type'::regclass THEN (SELECT y.typnamespace FROM pg_catalog.pg_type y WHERE y.oid = d.refobjid)
					ELSE 'pg_catalog'::regnamespace::oid END <> 'pg_catalog'::regnamespace::oid) LOOP
			EXECUTE obj;
		END LOOP;
		FOR obj IN SELECT format('DROP STATISTICS %I.%I', n.nspname, s.stxname)
			FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_class t ON t.oid = s.stxrelid
			JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
			WHERE t.relowner = roid
			  AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_statistic_ext'::regclass
				AND d.objid = s.oid AND CASE d.refclassid
					WHEN 'pg_catalog.pg_proc'::regclass THEN (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.refobjid)
					WHEN 'pg_catalog.pg_operator'::regclass THEN (SELECT o.oprnamespace FROM pg_catalog.pg_operator o WHERE o.oid = d.refobjid)
					WHEN 'pg_catalog.pg_type'::regclass THEN (SELECT y.typnamespace FROM pg_catalog.pg_type y WHERE y.oid = d.refobjid)
					ELSE 'pg_catalog'::regnamespace::oid END <> 'pg_catalog'::regnamespace::oid) LOOP
			EXECUTE obj;
		END LOOP;
		-- 17+: MAINTAIN lets its holders refresh a materialized view (its
		-- query runs as the owner) or analyze and reindex a table; what the
		-- user granted of it goes before the hand-over.
		IF current_setting('server_version_num')::int >= 170000 THEN
			FOR obj IN SELECT format('REVOKE MAINTAIN ON %s FROM %s', c.oid::regclass,
					CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
				FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
				WHERE c.relowner = roid AND a.privilege_type = 'MAINTAIN' AND a.grantee <> roid LOOP
				EXECUTE obj;
			END LOOP;
		END IF;
		IF current_setting('server_version_num')::int >= 150000 THEN
			FOR obj IN SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
				WHERE c.relowner = roid AND c.relkind = 'v' LOOP
				EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', obj);
			END LOOP;
		END IF;
		EXECUTE format('REASSIGN OWNED BY %I TO %I', r, target);
	END IF;
	IF holds THEN
		EXECUTE format('DROP OWNED BY %I', r);
	END IF;
END
