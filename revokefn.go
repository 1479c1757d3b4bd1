package postgres

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// The revocation's three blocks (revoke_login.sql, revoke_disarm.sql,
// revoke_role.sql) run as
// temporary functions of the plugin's own server session, made on the first
// revocation a session runs: a DO block is compiled, and each of its
// statements planned, on every run, which was most of a revocation's server
// time; a function's compiled form and plans are kept by the session. They
// live in pg_temp, which only that session can write, under a name that
// carries a hash of their text, so a session never runs another version's.
// A revocation's session reset (revokeReset) keeps them; every other
// request's (sessionReset) drops them with the rest of pg_temp. Where the
// admin may not create temporary objects, revocation runs the blocks as DO
// statements instead (state.noTempFunctions).

// revokeFn is one block as a temporary function.
type revokeFn struct {
	name   string   // in pg_temp
	sig    string   // argument types, for to_regprocedure
	params []string // "p_role text", …
	body   string   // the PL/pgSQL block
	create string   // the CREATE FUNCTION statement
}

// newRevokeFn makes the function named prefix plus the hash of its text,
// with params ("p_role text, …") and body (a PL/pgSQL block).
func newRevokeFn(prefix, params, body string) revokeFn {
	sum := sha256.Sum256([]byte(params + "\x00" + body))
	name := prefix + "_" + hex.EncodeToString(sum[:6])
	var sig, list []string
	for _, p := range strings.Split(params, ",") {
		f := strings.Fields(p)
		sig = append(sig, f[len(f)-1])
		list = append(list, strings.Join(f, " "))
	}
	return revokeFn{
		name:   name,
		sig:    strings.Join(sig, ","),
		params: list,
		body:   body,
		create: "CREATE FUNCTION pg_temp." + name + "(" + params + ") RETURNS void LANGUAGE plpgsql AS " + render.DollarQuote(body),
	}
}

// call is the SQL that calls the function with args (SQL literals).
func (f revokeFn) call(args ...string) string {
	return "SELECT pg_temp." + f.name + "(" + strings.Join(args, ", ") + ");\n"
}

// inline is the same block as a DO statement, its parameters declared with
// args for values: what runs where the function cannot be made.
func (f revokeFn) inline(args ...string) string {
	var b strings.Builder
	b.WriteString("DECLARE\n")
	for i, p := range f.params {
		b.WriteString("\t" + p + " := " + args[i] + ";\n")
	}
	b.WriteString("BEGIN\n" + strings.TrimRight(f.body, "\n") + ";\nEND")
	return "DO " + render.DollarQuote(b.String()) + ";\n"
}

// ensureFns is the SQL that makes the functions this session lacks. It is
// sent only after a call found one missing (fnMissing): the session's first
// revocation, or its first after another request's reset.
func ensureFns(fns ...revokeFn) string {
	var b strings.Builder
	b.WriteString("BEGIN ")
	for _, f := range fns {
		b.WriteString("IF pg_catalog.to_regprocedure(" + render.QuoteLiteral("pg_temp."+f.name+"("+f.sig+")") +
			") IS NULL THEN EXECUTE " + render.QuoteLiteral(f.create) + "; END IF; ")
	}
	b.WriteString("END")
	return "DO " + render.DollarQuote(b.String()) + ";\n"
}

// fnMissing reports a call to one of the revocation functions that this
// session does not have, or made before it had a temporary schema at all.
func fnMissing(err error) bool {
	msg := describe(err)
	return (sqlState(err) == "42883" && strings.Contains(msg, "pgvault_revoke_")) ||
		(sqlState(err) == "3F000" && strings.Contains(msg, "pg_temp"))
}

// revokeReset is sessionReset without DISCARD TEMP, for revocations: their
// SQL names nothing a temporary object could stand in for (search_path is
// pinned with pg_temp last, and every name they use is in pg_catalog), and it
// keeps the session's revocation functions.
const revokeReset = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL;\n"

// The functions' parameters, in place of the markers' literals.
const (
	loginParams  = "p_role text, p_target text, p_create_target boolean, p_terminate boolean"
	disarmParams = "p_role text"
	roleParams   = "p_role text, p_terminate boolean, p_final boolean, p_reassign text"
)

var (
	loginFn          = newRevokeFn("pgvault_revoke_login", loginParams, loginBody(plainNologin))
	loginContendedFn = newRevokeFn("pgvault_revoke_login", loginParams, loginBody(mustFill(nologinContendedSQL, map[string]string{"raise_prepared": raisePreparedSQL, "prepared_hint": render.QuoteLiteral(preparedHint)})))
	disarmFn         = newRevokeFn("pgvault_revoke_disarm", disarmParams, mustFill(revokeDisarmSQL, map[string]string{"role": "p_role"}))
	roleFn           = newRevokeFn("pgvault_revoke_role", roleParams, mustFill(revokeRoleSQL, map[string]string{
		"role": "p_role", "terminate": "p_terminate", "final": "p_final", "transient": transientSQL,
		"raise_prepared": raisePreparedSQL, "raise_others_prepared": raiseOthersPreparedSQL, "hand_over": strings.TrimRight(mustFill(handOverSQL, map[string]string{"reassign": "p_reassign"}), "\n"),
	}))
)

func loginBody(nologin string) string {
	return mustFill(revokeLoginSQL, map[string]string{
		"role": "p_role", "target": "p_target", "create_target": "p_create_target", "terminate": "p_terminate",
		"nologin": nologin, "holding_comment": holdingComment,
	})
}

// revokeSQL is the query string of one local revocation pass (see
// revokeLoginSQL): the blocks as calls of the session's functions, with
// ensure after making those it lacks, or as DO statements where it may not
// (noTempFunctions).
func (st *state) revokeSQL(username string, final, contended, ensure bool) (string, error) {
	reassign, err := st.reassignDo(username)
	if err != nil {
		return "", err
	}
	target := st.cfg.reassignTarget()
	login := loginFn
	if contended {
		login = loginContendedFn
	}
	invoke, made := revokeFn.call, ""
	if st.noTempFunctions.Load() {
		invoke = revokeFn.inline
	} else if ensure {
		made = ensureFns(login, disarmFn, roleFn)
	}
	return "BEGIN;\n" + st.revokeTx + made +
		invoke(login, render.QuoteLiteral(username), render.QuoteLiteral(target), boolSQL(target == holdingRole), boolSQL(st.cfg.TerminateSessions)) +
		"COMMIT;\nBEGIN;\n" + st.revokeTx + invoke(disarmFn, render.QuoteLiteral(username)) +
		"COMMIT;\n" + st.revokeTx +
		invoke(roleFn, render.QuoteLiteral(username), boolSQL(st.cfg.TerminateSessions), boolSQL(final), render.QuoteLiteral(reassign)) +
		revokeOutcome, nil
}

func boolSQL(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// tempRefused reports the server refusing the admin temporary objects
// (REVOKE TEMPORARY ON DATABASE … FROM PUBLIC).
func tempRefused(err error) bool {
	return sqlState(err) == "42501" && strings.Contains(describe(err), "temporary")
}
