package postgres

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"

	render "github.com/pgvault/vault-plugin-database-postgres/internal/sqlrender"
)

// Roles the plugin creates carry a label: a JSON comment (COMMENT ON ROLE)
// that tells a DBA who asked for the role and until when, and lets the
// reaper (reap.go) recognise orphans. The label is written in the same
// transaction as the creation, and its "expires" in the same transaction as
// each renewal, so it never disagrees with the role's VALID UNTIL.

// labelManagedBy is the label's managed_by: the mark of roles this plugin
// created.
const labelManagedBy = productName

// labelTimeFormat is RFC 3339 in UTC, to the second.
const labelTimeFormat = time.RFC3339

// roleLabel is the label's JSON, fields in the order the README shows.
type roleLabel struct {
	ManagedBy   string `json:"managed_by"`
	VaultRole   string `json:"vault_role"`
	DisplayName string `json:"display_name"`
	Created     string `json:"created"`
	Expires     string `json:"expires,omitempty"`
}

// newLabel is the label of a role created now for the request. A role
// without an expiration gets no "expires", and is never reaped.
func newLabel(meta dbplugin.UsernameMetadata, now, expires time.Time) string {
	l := roleLabel{
		ManagedBy:   labelManagedBy,
		VaultRole:   jsonSafe(meta.RoleName),
		DisplayName: jsonSafe(meta.DisplayName),
		Created:     labelTime(now),
	}
	if !expires.IsZero() {
		l.Expires = labelTime(expires)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// <, > and & stay readable in \du+; JSON does not need them escaped.
	enc.SetEscapeHTML(false)
	_ = enc.Encode(l) // strings only: cannot fail
	return strings.TrimSuffix(b.String(), "\n")
}

func labelTime(t time.Time) string { return t.UTC().Format(labelTimeFormat) }

// jsonSafe replaces NUL, which encoding/json writes as \u0000: jsonb refuses
// that escape, and one such label would make every DBA query that casts
// comments to jsonb fail. (Invalid UTF-8 becomes U+FFFD in encoding/json.)
func jsonSafe(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }

// labelCreatedSQL writes the label when the role exists and has no comment:
// a role the creation statements did not create (or dropped, or renamed)
// has nothing to label, and one they commented on keeps theirs (such a role
// is not reaped). It is appended to the creation statements, so it runs in
// their transaction and round trip. A label that cannot be written is a
// WARNING (in the server log), never a failed creation.
var labelCreatedSQL = loadSQL("label_created.sql")

// labelRenewedSQL rewrites "expires" in the role's label, if it has ours; any
// other comment, JSON or not, is left as it is. The text is edited in place
// so the label keeps its layout, and the edit is used only when it means
// exactly what jsonb_set would make of it (otherwise jsonb_set's text is).
var labelRenewedSQL = loadSQL("label_renewed.sql")

// asPlugin makes the rest of the transaction run as the configured user:
// creation and renewal statements may end with SET ROLE or SET SESSION
// AUTHORIZATION (to grant as an owner), and the label is the plugin's to
// write. It pins search_path, as revocation does (pinnedSearchPath): a user
// that may create in a schema on the session's path could otherwise plant a
// better-matching format() or operator and have the admin run it. LOCAL, so
// nothing outlives the transaction.
const asPlugin = "SET LOCAL SESSION AUTHORIZATION DEFAULT; SET LOCAL ROLE NONE; SET LOCAL search_path = " + pinnedPath + ";\n"

// labelStatement is the SQL that labels a role NewUser creates, to append to
// the rendered creation statements; "" when labelling is off. When the
// statements provably create the role named {{name}} and leave it as it is
// (render.CreatesName), a plain COMMENT labels it: the DO block that checks first
// costs the server a compilation on every credential. Nothing in such
// statements changes the session's role, so the COMMENT runs as the role
// that created the new one, which may always comment on it. Any other
// statements get the block, which labels the role only if it exists and
// has no comment, and never fails the creation. The statements are read as
// the operator wrote them, so that no value (a display name) chooses the
// path.
func (st *state) labelStatement(username string, req dbplugin.NewUserRequest) (string, error) {
	if !st.cfg.LabelRoles {
		return "", nil
	}
	label := render.QuoteLiteral(newLabel(req.UsernameConfig, time.Now(), req.Expiration))
	if render.CreatesName(req.Statements.Commands) {
		return "COMMENT ON ROLE " + render.QuoteIdent(username) + " IS " + label + ";\n", nil
	}
	return asPluginDo(labelCreatedSQL, map[string]string{"role": render.QuoteLiteral(username), "label": label})
}

// relabelStatement is the SQL that moves a labelled role's "expires" on
// renewal, to append to the renewal statements. Only a renewal alone (an
// expiration and no password) touches the label: a password change is a
// static-role or root rotation, and those roles are never labelled. It runs
// even with label_roles=false: a renewed role whose label kept the old
// expiry would look like an orphan to a reaper.
func relabelStatement(req dbplugin.UpdateUserRequest) (string, error) {
	if req.Expiration == nil || req.Password != nil {
		return "", nil
	}
	return asPluginDo(labelRenewedSQL, map[string]string{
		"role":       render.QuoteLiteral(req.Username),
		"expires":    render.QuoteLiteral(labelTime(req.Expiration.NewExpiration)),
		"managed_by": render.QuoteLiteral(labelManagedBy),
	})
}

// asPluginDo is the DO statement of a filled label block, run as the plugin.
func asPluginDo(t sqlTemplate, vals map[string]string) (string, error) {
	body, err := t.fill(vals)
	if err != nil {
		return "", err
	}
	return asPlugin + "DO " + render.DollarQuote(body) + ";\n", nil
}

// parseLabel returns the expiry of a comment that is this plugin's label, and
// whether it is one with a valid "expires". Keys are matched exactly, as
// jsonb's ->> does, so a DBA's query and the reaper agree on what a label is.
func parseLabel(comment string) (time.Time, bool) {
	var m map[string]any
	if json.Unmarshal([]byte(comment), &m) != nil {
		return time.Time{}, false
	}
	if by, _ := m["managed_by"].(string); by != labelManagedBy {
		return time.Time{}, false
	}
	s, _ := m["expires"].(string)
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}
