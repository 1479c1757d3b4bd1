-- PL/pgSQL statements for revoke_role.sql and reassign_elsewhere.sql: hand what
-- role r (oid roid) owns in the connected database to the receiving role, and
-- drop its privileges. One read of pg_shdepend (indexed by role) says whether
-- there is anything to do: most dynamic users own nothing, and the hand-over
-- itself (reassign_owned.sql, a DO statement given here as a literal) is
-- compiled only when there is.
DECLARE
	owns boolean;
	holds boolean;
BEGIN
	SELECT coalesce(bool_or(s.deptype = 'o'), false), count(*) > 0 INTO owns, holds
		FROM pg_catalog.pg_shdepend s
		WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = roid
		  AND s.dbid IN (0, (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()));
	IF owns THEN
		EXECUTE /* @reassign */ NULL;
	END IF;
	IF holds THEN
		EXECUTE format('DROP OWNED BY %I', r);
	END IF;
END
