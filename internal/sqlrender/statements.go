package sqlrender

// Creation statements read as the operator wrote them, before any value is
// rendered: whether they provably create the role named {{name}} and leave
// it in place (CreatesName), which lets the plugin write the role's label
// with a plain COMMENT instead of a block that looks first. Rendering escapes every
// value for its context, so the statements' structure is the template's:
// no display name or other value can change what this reads.

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// Kinds of token.
const (
	tokWord        = iota // keyword or bare identifier, upper-cased
	tokQuoted             // "…": text is the content as written
	tokPlaceholder        // a bare {{name}}: text is the placeholder's name
	tokSemicolon
	tokOpen  // (
	tokClose // )
	tokOther // strings, numbers, operators, U&"…": kind alone
)

type sqlToken struct {
	kind int
	text string
	end  int // where it ends in the SQL it was read from (scanTokens)
}

// CreatesName reports whether the statements create the role named {{name}}
// and nothing in them can remove it, rename it, set its comment, or change
// the role the session runs as. Then a COMMENT after them succeeds: it runs
// as the role that created the role, which may always comment on it. Only
// a few kinds of statement qualify; anything else (DO, SELECT, SET, DROP,
// COMMENT, a role's membership revoked) needs the block that checks first.
func CreatesName(stmts []string) bool {
	created := false
	for _, s := range Decode(stmts) {
		toks, ok := scanTokens(s)
		if !ok {
			return false
		}
		for _, stmt := range splitTokens(toks) {
			switch {
			case len(stmt) == 0:
			case !created && isCreateName(stmt):
				created = true
			case wordAt(stmt, 0, "GRANT"), wordAt(stmt, 0, "REVOKE") && hasWord(stmt, "ON"):
				// Privileges given, or object privileges taken: neither
				// reaches a role's existence or who may comment on it.
			case created && isAlterName(stmt):
			default:
				return false
			}
		}
	}
	return created
}

// isCreateName: CREATE ROLE|USER|GROUP {{name}} ….
func isCreateName(stmt []sqlToken) bool {
	return wordAt(stmt, 0, "CREATE") && (wordAt(stmt, 1, "ROLE") || wordAt(stmt, 1, "USER") || wordAt(stmt, 1, "GROUP")) &&
		len(stmt) > 2 && isName(stmt[2])
}

// isAlterName: ALTER ROLE|USER {{name}} … without RENAME. (ALTER GROUP can
// drop a member, the creator's admin membership included.)
func isAlterName(stmt []sqlToken) bool {
	return wordAt(stmt, 0, "ALTER") && (wordAt(stmt, 1, "ROLE") || wordAt(stmt, 1, "USER")) &&
		len(stmt) > 2 && isName(stmt[2]) && !hasWord(stmt, "RENAME")
}

// isName reports a token that renders as exactly the username: {{name}} or
// {{username}}, bare or as the whole of a quoted identifier.
func isName(t sqlToken) bool {
	name := t.text
	if t.kind == tokQuoted {
		if placeholderLen(name) != len(name) || len(name) == 0 {
			return false
		}
		name = placeholderName(name)
	} else if t.kind != tokPlaceholder {
		return false
	}
	return name == "name" || name == "username"
}

func wordAt(stmt []sqlToken, i int, w string) bool {
	return i < len(stmt) && stmt[i].kind == tokWord && stmt[i].text == w
}

func hasWord(stmt []sqlToken, w string) bool {
	for i := range stmt {
		if wordAt(stmt, i, w) {
			return true
		}
	}
	return false
}

// splitTokens splits tokens into statements at semicolons.
func splitTokens(toks []sqlToken) [][]sqlToken {
	var out [][]sqlToken
	start := 0
	for i, t := range toks {
		if t.kind == tokSemicolon {
			out = append(out, toks[start:i])
			start = i + 1
		}
	}
	return append(out, toks[start:])
}

// scanTokens reads sql into tokens, skipping whitespace and comments, by the
// rules the renderer's lexer follows; ok is false for text it cannot follow to
// the end (an unterminated string, identifier or comment).
func scanTokens(sql string) (toks []sqlToken, ok bool) {
	for i := 0; ; {
		if i, ok = skipBlank(sql, i); !ok {
			return nil, false
		}
		if i >= len(sql) {
			return toks, true
		}
		t, next := scanToken(sql, i)
		if next <= i {
			return nil, false
		}
		t.end = next
		toks = append(toks, t)
		i = next
	}
}

// skipBlank skips whitespace and comments from sql[i]; ok is false for a
// /* comment that does not end.
func skipBlank(sql string, i int) (int, bool) {
	for i < len(sql) {
		switch {
		case isSpace(sql[i]):
			i++
		case strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexAny(sql[i:], "\n\r")
			if j < 0 {
				return len(sql), true
			}
			i += j
		case strings.HasPrefix(sql[i:], "/*"):
			l := &lexer{src: sql, pos: i}
			if blockCommentState(l); l.err != nil {
				return i, false
			}
			i = l.pos
		default:
			return i, true
		}
	}
	return i, true
}

// scanToken reads the token at sql[i] and returns it with the position after
// it, or a position not past i when the token does not end.
func scanToken(sql string, i int) (sqlToken, int) {
	s := sql[i:]
	switch c := s[0]; {
	case c == ';':
		return sqlToken{kind: tokSemicolon}, i + 1
	case c == '(':
		return sqlToken{kind: tokOpen}, i + 1
	case c == ')':
		return sqlToken{kind: tokClose}, i + 1
	case c == '{' && placeholderLen(s) > 0:
		n := placeholderLen(s)
		return sqlToken{kind: tokPlaceholder, text: placeholderName(s[:n])}, i + n
	case c == '\'':
		return sqlToken{kind: tokOther}, stringEnd(sql, i, false)
	case c == '"':
		end := quotedEnd(sql, i)
		if end < 0 {
			return sqlToken{}, i
		}
		return sqlToken{kind: tokQuoted, text: sql[i+1 : end-1]}, end
	case c == '$':
		if tag, ok := dollarTag(s); ok {
			n := strings.Index(s[len(tag):], tag)
			if n < 0 {
				return sqlToken{}, i
			}
			return sqlToken{kind: tokOther}, i + 2*len(tag) + n
		}
		return sqlToken{kind: tokOther}, i + 1
	case isIdentStart(c):
		return wordToken(sql, i)
	case isDigit(c):
		end := i + 1
		for end < len(sql) && (isIdentStart(sql[end]) || isDigit(sql[end]) || sql[end] == '.') {
			end++
		}
		return sqlToken{kind: tokOther}, end
	}
	return sqlToken{kind: tokOther}, i + 1
}

// wordToken reads a keyword or identifier at sql[i], or a string or
// identifier with a prefix: E'…', N'…', B'…', X'…', U&'…', U&"…".
func wordToken(sql string, i int) (sqlToken, int) {
	s := sql[i:]
	if len(s) >= 2 && s[1] == '\'' && strings.ContainsRune("eEnNbBxX", rune(s[0])) {
		return sqlToken{kind: tokOther}, stringEnd(sql, i+1, s[0] == 'e' || s[0] == 'E')
	}
	if len(s) >= 3 && (s[0] == 'u' || s[0] == 'U') && s[1] == '&' && (s[2] == '\'' || s[2] == '"') {
		if s[2] == '"' {
			return sqlToken{kind: tokOther}, quotedEnd(sql, i+2)
		}
		return sqlToken{kind: tokOther}, stringEnd(sql, i+2, false)
	}
	end := i + 1
	for end < len(sql) && isIdentCont(sql[end]) {
		end++
	}
	return sqlToken{kind: tokWord, text: strings.ToUpper(sql[i:end])}, end
}

// stringEnd returns the end of the string (continuations included) whose
// quote is at sql[open], or -1 when it does not end.
func stringEnd(sql string, open int, backslashEscapes bool) int {
	_, end := stringExtent(sql, open, backslashEscapes)
	return end
}

// quotedEnd returns the end of the quoted identifier whose quote is at
// sql[open], or -1 when it does not end.
func quotedEnd(sql string, open int) int {
	for end := open + 1; ; {
		j := strings.IndexByte(sql[end:], '"')
		if j < 0 {
			return -1
		}
		end += j + 1
		if end < len(sql) && sql[end] == '"' {
			end++ // doubled quote
			continue
		}
		return end
	}
}

// Decode reads each statement in the other forms Vault's built-in plugin
// takes (strutil.ParseArbitraryStringSlice): base64 of the SQL, a JSON array
// of statements, or base64 of such an array. Neither form can be SQL: base64
// holds no space, quote or semicolon, and decodes here only to text, and no
// statement begins with "[". Anything else is returned as written.
func Decode(stmts []string) []string {
	out := make([]string, 0, len(stmts))
	for _, s := range stmts {
		text := strings.TrimSpace(s)
		if raw, err := base64.StdEncoding.DecodeString(text); err == nil && text != "" && isText(raw) {
			text = string(raw)
		} else {
			text = s
		}
		var list []string
		if t := strings.TrimSpace(text); strings.HasPrefix(t, "[") && json.Unmarshal([]byte(t), &list) == nil {
			out = append(out, list...)
			continue
		}
		out = append(out, text)
	}
	return out
}

// isText reports whether b is UTF-8 without control characters other than
// tab, newline and carriage return.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return false
		}
	}
	return true
}

// Statement is one top-level statement of rendered SQL, with the blanks and
// comments before it and its semicolon.
type Statement struct {
	SQL string
	// RunsCode: the statement may run something a name could stand for (see
	// runsNoCode).
	RunsCode bool
	// SetsSearchPath: SET [SESSION|LOCAL] search_path or RESET
	// search_path, which changes the session's path (ALTER ROLE … SET
	// search_path does not).
	SetsSearchPath bool
	// EndsTransaction: COMMIT, END, ABORT, PREPARE TRANSACTION or a
	// ROLLBACK that is not to a savepoint, which ends what SET LOCAL set.
	EndsTransaction bool
	// Savepoint: SAVEPOINT, which PostgreSQL runs only in an explicit
	// transaction block.
	Savepoint bool
}

// Split splits rendered SQL at its top-level semicolons, following the
// renderer's lexer, so that a DO body or a string keeps its own; ok is false
// for text it cannot follow to the end, and for a semicolon that does not
// end a statement although it stands outside any string: inside
// parentheses (a rule's action list) or a BEGIN ATOMIC body.
func Split(sql string) (stmts []Statement, ok bool) {
	all, ok := scanTokens(sql)
	if !ok {
		return nil, false
	}
	start, depth := 0, 0
	var toks []sqlToken
	for _, t := range all {
		switch t.kind {
		case tokOpen:
			depth++
		case tokClose:
			depth--
		}
		if t.kind != tokSemicolon {
			toks = append(toks, t)
			continue
		}
		if depth != 0 || hasAtomicBody(toks) {
			return nil, false
		}
		stmts = append(stmts, newStatement(sql[start:t.end], toks))
		start, toks = t.end, nil
	}
	if start < len(sql) {
		stmts = append(stmts, newStatement(sql[start:], toks))
	}
	return stmts, true
}

// hasAtomicBody reports a statement with BEGIN ATOMIC, whose body holds
// semicolons of its own.
func hasAtomicBody(toks []sqlToken) bool {
	for i := range toks {
		if wordAt(toks, i, "BEGIN") && wordAt(toks, i+1, "ATOMIC") {
			return true
		}
	}
	return false
}

func newStatement(sql string, toks []sqlToken) Statement {
	st := Statement{SQL: sql, RunsCode: !runsNoCode(toks)}
	path := 1
	if wordAt(toks, 1, "SESSION") || wordAt(toks, 1, "LOCAL") {
		path = 2
	}
	st.SetsSearchPath = (wordAt(toks, 0, "SET") || wordAt(toks, 0, "RESET")) && wordAt(toks, path, "SEARCH_PATH")
	st.EndsTransaction = wordAt(toks, 0, "COMMIT") || wordAt(toks, 0, "END") || wordAt(toks, 0, "ABORT") ||
		(wordAt(toks, 0, "PREPARE") && wordAt(toks, 1, "TRANSACTION")) ||
		(wordAt(toks, 0, "ROLLBACK") && !hasWord(toks, "TO"))
	st.Savepoint = wordAt(toks, 0, "SAVEPOINT")
	return st
}

// runsNoCode reports whether a statement only creates, alters, drops or
// grants roles, grants or revokes privileges, or comments on an object (a
// USER MAPPING is not a role: its options go to the foreign data wrapper's
// validator): statements that look names up but run nothing a name could
// stand for (no function, operator, cast, trigger, rule or default), so that
// the search_path they run with changes only which objects they name. DO,
// SELECT, DML, SET, EXECUTE, ALTER TABLE (a default, a type change) and
// everything else run code. An empty statement runs none.
func runsNoCode(stmt []sqlToken) bool {
	switch {
	case len(stmt) == 0:
	case wordAt(stmt, 0, "GRANT"), wordAt(stmt, 0, "REVOKE"):
	case wordAt(stmt, 0, "COMMENT") && wordAt(stmt, 1, "ON"):
	case (wordAt(stmt, 0, "CREATE") || wordAt(stmt, 0, "ALTER") || wordAt(stmt, 0, "DROP")) &&
		(wordAt(stmt, 1, "ROLE") || wordAt(stmt, 1, "USER") && !wordAt(stmt, 2, "MAPPING") || wordAt(stmt, 1, "GROUP")):
	default:
		return false
	}
	return true
}
