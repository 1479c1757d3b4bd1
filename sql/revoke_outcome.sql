-- The outcome of revoke_role.sql, its note, and the other databases holding the role's objects (revoke.go).
-- Only settings: a query of the catalogs here is planned on every run.
SELECT current_setting('pgvault.revoke_state', true),
	coalesce(current_setting('pgvault.revoke_note', true), ''),
	coalesce(nullif(current_setting('pgvault.revoke_others', true), ''), '{}')::text[]
