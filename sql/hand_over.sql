-- PL/pgSQL statements for revoke_role.sql and reassign_elsewhere.sql: hand what
-- role r owns in the connected database to role target, and drop its privileges.
-- What the user wrote must not gain the rights of the role that receives
-- it: its SECURITY DEFINER routines become SECURITY INVOKER, and (15+)
-- its views check the privileges of whoever queries them.
DECLARE
	obj text;
BEGIN
	FOR obj IN SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
		WHERE p.proowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r) AND p.prosecdef LOOP
		EXECUTE format('ALTER ROUTINE %s SECURITY INVOKER', obj);
	END LOOP;
	IF current_setting('server_version_num')::int >= 150000 THEN
		FOR obj IN SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
			WHERE c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = r) AND c.relkind = 'v' LOOP
			EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', obj);
		END LOOP;
	END IF;
END;
EXECUTE format('REASSIGN OWNED BY %I TO %I', r, target);
EXECUTE format('DROP OWNED BY %I', r)
