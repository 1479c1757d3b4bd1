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
