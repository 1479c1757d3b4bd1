// Package sqlrender renders the plugin's SQL statements: a small lexer that
// follows PostgreSQL's own scanner (src/backend/parser/scan.l) closely
// enough to know, for every {{placeholder}}, which quoting context it stands
// in, and escapes the value for exactly that context. One function per
// context, in the style of pgx's internal/sanitize.
//
// Contexts:
//   - bare SQL: a name becomes a quoted identifier, any other value a literal;
//   - "…" and U&"…" identifiers;
//   - '…', E'…', U&'…', N'…', B'…', X'…' strings, with continuations (a string
//     followed by whitespace holding a newline and another '…' is one string)
//     and UESCAPE;
//   - $tag$…$tag$ strings;
//   - -- and nested /* */ comments (placeholders there are left alone);
//   - code inside strings: the body of DO, of CREATE FUNCTION … AS, and the
//     string EXECUTE runs in PL/pgSQL are SQL themselves. Their content is
//     decoded, rendered as SQL (recursively: an EXECUTE string in a DO body in
//     …), and encoded back, so a value is escaped for its innermost context
//     and then for every string around it.
//
// A value can never end a dollar-quoted string early: the rendered body is
// checked for its closing tag, and a value that would form it is refused.
//
// It is pure (no database, nothing else from the plugin): the plugin renders
// every statement it runs with Render, and quotes the names and values it
// writes into its own SQL with QuoteIdent, QuoteLiteral and DollarQuote.
package sqlrender

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// expirationFormat is how {{expiration}} is rendered, as the built-in does: a
// timestamp with zone that PostgreSQL parses in VALID UNTIL.
const expirationFormat = "2006-01-02 15:04:05-0700"

// Values are the values a statement can refer to: {{name}} (or
// {{username}}) always, {{password}} and {{expiration}} once set with
// WithPassword and WithExpiration; a statement naming one that is not set
// is refused.
type Values struct {
	Username   string
	Password   string // already in the form to send (verifier or plaintext)
	Expiration string // formatted by WithExpiration
	hasPass    bool
	hasExp     bool
}

// NewValues returns the values of a statement about username.
func NewValues(username string) Values {
	return Values{Username: username}
}

// WithPassword returns v with {{password}} set to p, which is sent as given.
func (v Values) WithPassword(p string) Values {
	v.Password, v.hasPass = p, true
	return v
}

// WithExpiration returns v with {{expiration}} set to t, written as a
// timestamp with zone.
func (v Values) WithExpiration(t time.Time) Values {
	v.Expiration, v.hasExp = t.Format(expirationFormat), true
	return v
}

// lookup returns the value for a placeholder name and whether it is a
// username (quoted as an identifier when it stands bare in the SQL).
func (v Values) lookup(name string) (val string, ident bool, err error) {
	val, ident, err = v.value(name)
	if err == nil && strings.IndexByte(val, 0) >= 0 {
		// The query message is NUL-terminated: a NUL would cut the SQL.
		return "", false, fmt.Errorf("the value of {{%s}} contains a NUL byte, which SQL text cannot hold", name)
	}
	return val, ident, err
}

func (v Values) value(name string) (val string, ident bool, err error) {
	switch name {
	case "name", "username":
		return v.Username, true, nil
	case "password":
		if !v.hasPass {
			return "", false, fmt.Errorf("{{password}} is not available in this statement")
		}
		return v.Password, false, nil
	case "expiration":
		if !v.hasExp {
			return "", false, fmt.Errorf("{{expiration}} is not available in this statement")
		}
		return v.Expiration, false, nil
	}
	return "", false, unknownPlaceholder(name)
}

// unknownPlaceholder is the error for a {{name}} the renderer has no value
// for. In a string's or a dollar quote's data it is text, left as written,
// as the built-in leaves it ('owner: {{team}}'), unless it looks like a
// misspelt placeholder (nearPlaceholder); anywhere else (a name, code) it is
// refused.
type unknownPlaceholder string

// nearPlaceholder reports a name that looks like a misspelt placeholder
// ({{Password}}, {{passwrod}}, {{user}}): kept as text, it would become, say,
// a fixed password everyone can read in the statements, while Vault hands
// out another.
func nearPlaceholder(name string) bool {
	name = strings.ToLower(name)
	for _, known := range []string{"name", "username", "password", "expiration"} {
		if len(name) >= 3 && strings.Contains(known, name) || editDistance(name, known) <= 2 {
			return true
		}
	}
	return false
}

// editDistance is the Levenshtein distance between a and b, by bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func (u unknownPlaceholder) Error() string {
	return fmt.Sprintf("unknown placeholder {{%s}} (use {{name}}, {{username}}, {{password}} or {{expiration}})", string(u))
}

// Render renders every statement and joins them into one SQL text
// that is sent in a single simple-protocol Exec: PostgreSQL runs it as one
// implicit transaction, so the request is atomic and costs one round trip.
// Statements are never split: DO blocks, function bodies and semicolons in
// literals reach the server exactly as written (a statement in the built-in
// plugin's other forms, base64 or a JSON array, is read first: Decode).
func Render(stmts []string, v Values) (string, error) {
	var b strings.Builder
	var mentions, hasCode bool
	for i, s := range Decode(stmts) {
		if strings.TrimSpace(s) == "" {
			continue
		}
		out, code, err := renderTop(s, v)
		if err != nil {
			return "", fmt.Errorf("statement %d: %w", i+1, err)
		}
		mentions = mentions || changesConformingStrings(s)
		hasCode = hasCode || code
		// Code in strings (a DO body, an EXECUTE string) is lexed when it
		// runs, with the settings of that moment: after a statement that
		// turns standard_conforming_strings off, a backslash in a value
		// would escape the quote the renderer closed the value with.
		if mentions && hasCode {
			return "", errors.New("statements that change standard_conforming_strings cannot be combined with code in strings (DO, EXECUTE, function bodies): values are escaped for on, the setting the plugin connects with")
		}
		// The newline ends a trailing -- comment before the separator.
		b.WriteString(out)
		b.WriteString("\n;\n")
	}
	return b.String(), nil
}

// changesConformingStrings reports whether sql may change
// standard_conforming_strings: it names the setting other than to read it
// with current_setting.
func changesConformingStrings(sql string) bool {
	s := strings.ToLower(sql)
	s = strings.ReplaceAll(s, "current_setting('standard_conforming_strings'", "")
	return strings.Contains(s, "standard_conforming_strings")
}

// renderSQL substitutes the {{placeholders}} of one piece of SQL.
func renderSQL(sql string, v Values) (string, error) {
	out, _, err := renderTop(sql, v)
	return out, err
}

// renderTop renders one piece of SQL and reports whether it holds code in
// a string.
func renderTop(sql string, v Values) (string, bool, error) {
	l := &lexer{src: sql, vals: v}
	out, err := l.render()
	// The piece of SQL is the unit: a value in code anywhere in it and
	// another language named anywhere in it are refused together, as the
	// lexer does not follow which body a clause belongs to.
	if err == nil && strings.Contains(l.lang, "{{") {
		return "", false, fmt.Errorf("a placeholder names the language (LANGUAGE %s): a value would choose how the body is run; name the language in the statement", l.lang)
	}
	if err == nil && l.valueInCode && l.lang != "" {
		return "", false, fmt.Errorf("a placeholder inside a LANGUAGE %s body: the plugin can escape values only for SQL and PL/pgSQL code, and %s quotes strings by its own rules; pass the value in from SQL instead (for example a PL/pgSQL block that runs EXECUTE format(…, '{{name}}'))", l.lang, l.lang)
	}
	return out, l.sawCode, err
}

// maxNesting bounds code-in-a-string recursion (DO → EXECUTE → …).
const maxNesting = 8

// lexer renders one level of SQL text. Nested code (a DO body, an EXECUTE
// string) gets a lexer of its own over the decoded content.
type lexer struct {
	src   string
	pos   int // next byte to read
	start int // src[start:pos] is read but not yet written to out
	out   strings.Builder
	vals  Values
	depth int
	// prev and last are the two previous words (upper-cased keywords or
	// identifiers; "" after any other token): they tell whether a string
	// that follows holds code.
	prev, last string
	// dot is set by a "." after a name: the next name is the next part of
	// a qualified one (pg_catalog.format), which stands where the whole
	// name does.
	dot bool
	err error
	// codeArg is set by the "(" of EXECUTE (…) (argCommand) and EXECUTE
	// format(…) (argFormat): the string right after it is the command, or
	// its format.
	codeArg int
	// sawCode is set when a string holding code was rendered, valueInCode
	// when that code holds a placeholder.
	sawCode, valueInCode bool
	// lang is the first language named here or in nested code other than
	// sql and plpgsql (see languageName).
	lang string
}

// sawCodeString records a string holding code, about to be rendered.
func (l *lexer) sawCodeString(content string) {
	l.sawCode = true
	l.valueInCode = l.valueInCode || strings.Contains(content, "{{")
}

// languageName records name, a token just read, when it names a language:
// it follows the keyword LANGUAGE. The lexer finds the clause rather than
// a pattern over the text, because only the lexer knows what PostgreSQL
// will read: comments (nested ones too) are whitespace between the keyword
// and the name, a LANGUAGE word in a literal or a comment is no clause,
// and in code inside a string the clause is read from the decoded text
// (a doubled quote is one, E'pl\x70erlu' is plperlu).
// Stripping comments first would need this lexer anyway: /* and -- inside
// quotes are not comments.
func (l *lexer) languageName(name string) {
	if l.last == "LANGUAGE" && !l.dot {
		l.sawLanguage(name)
	}
}

// sawLanguage keeps name unless it is sql or plpgsql, the two languages
// whose strings the renderer can escape a value for. Names are compared as
// PostgreSQL does after folding: 'PLPGSQL' is another language. A name
// holding a placeholder is kept over any other: it is refused whatever
// the body holds.
func (l *lexer) sawLanguage(name string) {
	if name == "" || name == "sql" || name == "plpgsql" || strings.Contains(l.lang, "{{") {
		return
	}
	if l.lang == "" || strings.Contains(name, "{{") {
		l.lang = name
	}
}

type stateFn func(*lexer) stateFn

// renderCode renders the code in a string at this point, one level deeper,
// and takes in the languages it names.
func (l *lexer) renderCode(sql string, v Values) (string, error) {
	if l.depth+1 > maxNesting {
		return "", fmt.Errorf("code is nested in strings more than %d levels deep", maxNesting)
	}
	sub := &lexer{src: sql, vals: v, depth: l.depth + 1}
	out, err := sub.render()
	l.sawLanguage(sub.lang)
	return out, err
}

// scanLanguages looks for LANGUAGE clauses in a string inside code that is
// not itself code. PL/pgSQL glues such strings into commands it runs
// (EXECUTE 'CREATE FUNCTION …' || ' LANGUAGE plperlu AS …'), and a clause
// there names the language of a body the renderer cannot follow. Strings
// in top-level SQL are data the server does not run, and are not scanned.
func (l *lexer) scanLanguages(content string) {
	if l.depth == 0 || l.depth >= maxNesting {
		return
	}
	sub := &lexer{src: content, vals: l.vals, depth: l.depth + 1}
	_, _ = sub.render() // a fragment of a command need not lex on its own
	l.sawLanguage(sub.lang)
}

func (l *lexer) render() (string, error) {
	l.out.Grow(len(l.src) + 64)
	for state := stateFn(rawState); state != nil; {
		state = state(l)
	}
	if l.err != nil {
		return "", l.err
	}
	l.flush()
	return l.out.String(), nil
}

// flush writes the pending original text.
func (l *lexer) flush() {
	l.out.WriteString(l.src[l.start:l.pos])
	l.start = l.pos
}

// replace writes s in place of src[l.start:end] (everything read since the
// last write up to from is kept), and moves past end.
func (l *lexer) replace(from, end int, s string) {
	l.out.WriteString(l.src[l.start:from])
	l.out.WriteString(s)
	l.pos, l.start = end, end
}

func (l *lexer) fail(err error) stateFn {
	l.err = err
	return nil
}

// word records a name or keyword: unquoted ones upper-cased, quoted ones
// as `"` and their value.
func (l *lexer) word(w string) {
	switch {
	case l.dot:
		l.last = w // pg_catalog.format: prev is still what came before
	case l.codeArg == argCommand:
		// EXECUTE (format(…)): the word opens the command as it does
		// right after EXECUTE.
		l.prev, l.last = "EXECUTE", w
	default:
		l.prev, l.last = l.last, w
	}
	l.dot, l.codeArg = false, 0
}

func (l *lexer) other() { l.prev, l.last, l.codeArg, l.dot = l.last, "", 0, false }

// isFormat reports whether w, a word, names PostgreSQL's format: format or
// FORMAT unquoted, "format" quoted (quoted names keep their case). It is
// the last part of a name, so pg_catalog.format, mydb.pg_catalog.format
// and a wrapper in another schema (app.format) count too: reading the
// string as a format costs a doubled % where the function reads none, and
// missing a real format lets a value end the literal EXECUTE runs.
//
// Not recognised, because the lexer follows tokens, not expressions: a
// format string held in a variable, glued with || or built by another
// function (concat, a subquery, a wrapper of another name), written as a
// typed literal (text '…') or CAST, and format called outside EXECUTE's
// argument (its result is data, unless the statements run it in ways the
// renderer cannot follow). Write EXECUTE format('…', …) with the string
// right after the parenthesis for values there to be escaped.
func isFormat(w string) bool { return w == "FORMAT" || w == `"format` }

// Kinds of code argument (lexer.codeArg).
const (
	argCommand = 1
	argFormat  = 2
)

// openParen reads "(": after EXECUTE, or EXECUTE format, a string that
// follows is the command PL/pgSQL runs. A "(" right after one of those
// keeps the argument: EXECUTE (('…')) and format(('…'), …) run the string.
func (l *lexer) openParen() {
	arg := 0
	switch {
	case l.last == "EXECUTE":
		arg = argCommand
	case isFormat(l.last) && l.prev == "EXECUTE":
		arg = argFormat
	case l.last == "":
		arg = l.codeArg
	}
	l.other()
	l.codeArg = arg
}

// codeFollows reports whether a string at this point holds SQL: the body of
// DO [LANGUAGE x], of a routine (AS), or the command of PL/pgSQL's EXECUTE,
// bare, in parentheses or as the format of EXECUTE format(…).
func (l *lexer) codeFollows() bool {
	if l.codeArg != 0 {
		return true
	}
	switch l.last {
	case "DO", "AS", "EXECUTE":
		return true
	}
	return l.prev == "LANGUAGE" && l.last != ""
}

// innerValues are the values for the code in the string at this point: in
// the format of EXECUTE format(…) a % in a value is doubled, so format()
// gives back the value rather than reading a directive.
func (l *lexer) innerValues() Values {
	v := l.vals
	if l.codeArg == argFormat {
		v.Username = strings.ReplaceAll(v.Username, "%", "%%")
		v.Password = strings.ReplaceAll(v.Password, "%", "%%")
		v.Expiration = strings.ReplaceAll(v.Expiration, "%", "%%")
	}
	return v
}

// rawState reads bare SQL: tokens, and the start of every quoted context.
func rawState(l *lexer) stateFn {
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case c == '-' && strings.HasPrefix(l.src[l.pos:], "--"):
			return lineCommentState
		case c == '/' && strings.HasPrefix(l.src[l.pos:], "/*"):
			return blockCommentState
		case c == '{' && placeholderLen(l.src[l.pos:]) > 0:
			return barePlaceholderState
		case c == '\'':
			return stringState(kindStandard, 0)
		case c == '"':
			return identState(false, 0)
		case c == '$':
			return dollarState
		case isIdentStart(c):
			return wordState
		case c >= '0' && c <= '9':
			// A number (also 0x1F, 1e5, 1_000): a $ after it may open a
			// dollar quote, unlike a $ after an identifier.
			for l.pos < len(l.src) && (isIdentStart(l.src[l.pos]) || isDigit(l.src[l.pos]) || l.src[l.pos] == '.') {
				l.pos++
			}
			l.other()
		case isSpace(c):
			l.pos++
		case c == '(':
			l.pos++
			l.openParen()
		case c == '.' && l.last != "" && !l.dot:
			l.pos++
			l.dot, l.codeArg = true, 0
		default:
			l.pos++
			l.other()
		}
	}
	return nil
}

// wordState reads an identifier or keyword, or the prefix of a special
// string: E'…', U&'…', U&"…", N'…', B'…', X'…'.
func wordState(l *lexer) stateFn {
	s := l.src[l.pos:]
	if len(s) >= 2 && s[1] == '\'' {
		switch s[0] {
		case 'e', 'E':
			return stringState(kindEscape, 1)
		case 'n', 'N':
			return stringState(kindStandard, 1)
		case 'b', 'B', 'x', 'X':
			return stringState(kindBits, 1)
		}
	}
	if len(s) >= 3 && (s[0] == 'u' || s[0] == 'U') && s[1] == '&' {
		switch s[2] {
		case '\'':
			return stringState(kindUnicode, 2)
		case '"':
			return identState(true, 2)
		}
	}
	end := l.pos + 1
	for end < len(l.src) && isIdentCont(l.src[end]) {
		end++
	}
	l.languageName(asciiLower(l.src[l.pos:end]))
	l.word(strings.ToUpper(l.src[l.pos:end]))
	l.pos = end
	return rawState
}

// lineCommentState skips a -- comment. It ends at a line feed or a carriage
// return, as in PostgreSQL.
func lineCommentState(l *lexer) stateFn {
	end := strings.IndexAny(l.src[l.pos:], "\n\r")
	if end < 0 {
		l.pos = len(l.src)
		return nil
	}
	l.pos += end
	return rawState
}

// blockCommentState skips a /* */ comment; they nest.
func blockCommentState(l *lexer) stateFn {
	depth := 0
	for l.pos < len(l.src)-1 {
		switch {
		case l.src[l.pos] == '/' && l.src[l.pos+1] == '*':
			depth++
			l.pos += 2
		case l.src[l.pos] == '*' && l.src[l.pos+1] == '/':
			depth--
			l.pos += 2
			if depth == 0 {
				return rawState
			}
		default:
			l.pos++
		}
	}
	return l.fail(errUnterminated("/* comment"))
}

// barePlaceholderState renders a placeholder that stands outside any quotes:
// a name as a quoted identifier, any other value as a string literal.
func barePlaceholderState(l *lexer) stateFn {
	n := placeholderLen(l.src[l.pos:])
	l.languageName(l.src[l.pos : l.pos+n])
	val, ident, err := l.vals.lookup(placeholderName(l.src[l.pos : l.pos+n]))
	if err != nil {
		return l.fail(err)
	}
	if ident {
		val = QuoteIdent(val)
	} else {
		val = QuoteLiteral(val)
	}
	l.replace(l.pos, l.pos+n, val)
	l.other()
	return rawState
}

// identState renders a quoted identifier, "…" or U&"…" (prefix is the length
// of "U&"), escaping values by doubling " (and the Unicode escape character).
func identState(unicode bool, prefix int) stateFn {
	return func(l *lexer) stateFn {
		open := l.pos + prefix
		end := open + 1
		for {
			i := strings.IndexByte(l.src[end:], '"')
			if i < 0 {
				return l.fail(errUnterminated(`quoted identifier "…"`))
			}
			end += i + 1
			if end < len(l.src) && l.src[end] == '"' {
				end++ // doubled quote
				continue
			}
			break
		}
		escChar := byte(0)
		if unicode {
			escChar = l.uescape(end)
		}
		l.flush()
		if err := l.renderData(open+1, max(open+1, end-1), false, func(v string) string {
			if escChar != 0 {
				v = strings.ReplaceAll(v, string(escChar), string([]byte{escChar, escChar}))
			}
			return strings.ReplaceAll(v, `"`, `""`)
		}); err != nil {
			return l.fail(err)
		}
		l.pos = end
		name := identValue(l.src[open+1:end-1], escChar)
		l.languageName(name)
		l.word(`"` + name)
		return rawState
	}
}

// identValue returns the name a quoted identifier's content stands for:
// "" is ", and in U&"…" (escChar set) escapes are decoded.
func identValue(raw string, escChar byte) string {
	raw = strings.ReplaceAll(raw, `""`, `"`)
	if escChar == 0 {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		if raw[i] == escChar && i+1 < len(raw) {
			i += decodeUnicodeEscape(&b, raw[i+1:], escChar)
			continue
		}
		b.WriteByte(raw[i])
	}
	return b.String()
}

// String kinds.
const (
	kindStandard = iota // '…' and N'…' (standard_conforming_strings is pinned on)
	kindEscape          // E'…'
	kindUnicode         // U&'…'
	kindBits            // B'…', X'…'
)

// stringState renders a quoted string, continuations included. When the
// string holds code (see codeFollows) its content is rendered as SQL;
// otherwise values are escaped for the string itself.
func stringState(kind, prefix int) stateFn {
	return func(l *lexer) stateFn {
		code := l.codeFollows() && kind != kindBits
		open := l.pos + prefix
		segs, end := stringExtent(l.src, open, kind == kindEscape)
		if end < 0 {
			return l.fail(errUnterminated("quoted string '…'"))
		}
		escChar := byte('\\')
		if kind == kindUnicode {
			escChar = l.uescape(end)
		}
		l.pos = open
		l.flush() // the prefix (E, U&, N…) as written
		content := decodeString(l.src, segs, kind, escChar)
		if code {
			l.sawCodeString(content)
			inner, err := l.renderCode(content, l.innerValues())
			if err != nil {
				return l.fail(err)
			}
			l.replace(open, end, "'"+encodeString(inner, kind, escChar)+"'")
		} else {
			// Quotes and the whitespace between continued segments stay
			// as written; only placeholders change.
			for _, s := range segs {
				if err := l.renderData(s[0], s[1], true, func(v string) string { return encodeString(v, kind, escChar) }); err != nil {
					return l.fail(err)
				}
			}
			l.pos = end
			l.flush()
			l.scanLanguages(content)
		}
		l.afterLiteral(content)
		return rawState
	}
}

// afterLiteral records a string that was just read, content its value. After
// LANGUAGE it is the language's name (DO LANGUAGE 'plpgsql' $$…$$ is valid),
// so the body that follows is still code; anywhere else a string ends a
// phrase.
func (l *lexer) afterLiteral(content string) {
	if l.last == "LANGUAGE" {
		l.languageName(content)
		l.word("'")
		return
	}
	l.other()
}

// errUnterminated refuses SQL that leaves a context open. Statements are
// rendered one by one but joined for the server, so an open string would
// swallow the next statement, whose values were escaped for another context.
func errUnterminated(what string) error {
	return fmt.Errorf("an unterminated %s: close it", what)
}

// stringExtent returns the content ranges of a string opening at src[open]
// (a quote) and its continuations, and the end of the whole string. A
// continuation is a quote after whitespace that holds at least one newline,
// where only -- comments (not /* */) may stand.
func stringExtent(src string, open int, backslashEscapes bool) (segs [][2]int, end int) {
	i := open + 1
	segStart := i
	for i < len(src) {
		c := src[i]
		switch {
		case backslashEscapes && c == '\\':
			i += 2
			continue
		case c == '\'':
			if i+1 < len(src) && src[i+1] == '\'' {
				i += 2
				continue
			}
			segs = append(segs, [2]int{segStart, i})
			if next, ok := continuation(src, i+1); ok {
				i = next + 1
				segStart = i
				continue
			}
			return segs, i + 1
		}
		i++
	}
	return nil, -1 // unterminated
}

// continuation reports whether src[i:] is whitespace holding a newline
// followed by a quote, and where that quote is.
func continuation(src string, i int) (int, bool) {
	newline := false
	for i < len(src) {
		switch c := src[i]; {
		case c == '\n' || c == '\r':
			newline = true
			i++
		case c == ' ' || c == '\t' || c == '\f' || c == '\v':
			i++
		case c == '-' && strings.HasPrefix(src[i:], "--"):
			j := strings.IndexAny(src[i:], "\n\r")
			if j < 0 {
				return 0, false
			}
			i += j
		case c == '\'' && newline:
			return i, true
		default:
			return 0, false
		}
	}
	return 0, false
}

// uescape looks past a U& string or identifier ending at src[end] for
// UESCAPE 'c' and returns the escape character (backslash by default).
func (l *lexer) uescape(end int) byte {
	i := skipSpaceAndComments(l.src, end)
	if len(l.src)-i < 7 || !strings.EqualFold(l.src[i:i+7], "UESCAPE") || (i+7 < len(l.src) && isIdentCont(l.src[i+7])) {
		return '\\'
	}
	i = skipSpaceAndComments(l.src, i+7)
	if i+2 < len(l.src) && l.src[i] == '\'' && l.src[i+2] == '\'' {
		return l.src[i+1]
	}
	return '\\' // invalid UESCAPE: the server rejects the statement
}

func skipSpaceAndComments(src string, i int) int {
	for i < len(src) {
		switch {
		case isSpace(src[i]):
			i++
		case strings.HasPrefix(src[i:], "--"):
			j := strings.IndexAny(src[i:], "\n\r")
			if j < 0 {
				return len(src)
			}
			i += j
		case strings.HasPrefix(src[i:], "/*"):
			l := &lexer{src: src, pos: i}
			blockCommentState(l)
			i = l.pos
		default:
			return i
		}
	}
	return i
}

// dollarState reads $n (a parameter) or a dollar-quoted string. A body that
// holds code is rendered as SQL; any other body takes values verbatim. Either
// way the rendered body must not contain its closing tag.
func dollarState(l *lexer) stateFn {
	tag, ok := dollarTag(l.src[l.pos:])
	if !ok {
		l.pos++
		for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
			l.pos++ // $1
		}
		l.other()
		return rawState
	}
	code := l.codeFollows()
	bodyStart := l.pos + len(tag)
	n := strings.Index(l.src[bodyStart:], tag)
	if n < 0 {
		return l.fail(errUnterminated("dollar-quoted string " + tag + "…" + tag))
	}
	bodyEnd := bodyStart + n
	var body string
	if code {
		l.sawCodeString(l.src[bodyStart:bodyEnd])
		var err error
		if body, err = l.renderCode(l.src[bodyStart:bodyEnd], l.innerValues()); err != nil {
			return l.fail(err)
		}
	} else {
		l.scanLanguages(l.src[bodyStart:bodyEnd])
		sub := &lexer{src: l.src[bodyStart:bodyEnd], vals: l.vals}
		if err := sub.renderData(0, len(sub.src), true, func(v string) string { return v }); err != nil {
			return l.fail(err)
		}
		sub.pos = len(sub.src)
		sub.flush()
		body = sub.out.String()
	}
	if strings.Index(body+tag, tag) != len(body) {
		return l.fail(fmt.Errorf("a value would end the dollar-quoted string %s…%s it is rendered into (it holds the tag, or ends in $): use another tag, or a quoted literal such as '{{password}}'", tag, tag))
	}
	l.replace(l.pos, bodyEnd+len(tag), tag+body+tag)
	l.afterLiteral(l.src[bodyStart:bodyEnd])
	return rawState
}

// renderData writes the pending text up to src[to], where src[from:to] is the
// content of a quoted context, with each placeholder there replaced by its
// value escaped by esc. In text (not a name), an unknown placeholder stays as
// written.
func (l *lexer) renderData(from, to int, text bool, esc func(string) string) error {
	i := from
	for i < to {
		j := strings.Index(l.src[i:to], "{{")
		if j < 0 {
			break
		}
		i += j
		n := placeholderLen(l.src[i:to])
		if n == 0 {
			i++ // {{{password}}}: the placeholder starts at the next brace
			continue
		}
		val, _, err := l.vals.lookup(placeholderName(l.src[i : i+n]))
		var unknown unknownPlaceholder
		if text && errors.As(err, &unknown) && !nearPlaceholder(string(unknown)) {
			i += n
			continue
		}
		if err != nil {
			return err
		}
		l.out.WriteString(l.src[l.start:i])
		l.out.WriteString(esc(val))
		i += n
		l.start = i
	}
	l.out.WriteString(l.src[l.start:to])
	l.start = to
	return nil
}

// decodeString returns the characters a string's content stands for, so that
// code inside it can be lexed as the server will run it.
func decodeString(src string, segs [][2]int, kind int, escChar byte) string {
	var b strings.Builder
	for _, s := range segs {
		c := src[s[0]:s[1]]
		for i := 0; i < len(c); i++ {
			switch {
			case c[i] == '\'' && i+1 < len(c) && c[i+1] == '\'':
				b.WriteByte('\'')
				i++
			case kind == kindEscape && c[i] == '\\' && i+1 < len(c):
				i += decodeBackslash(&b, c[i+1:])
			case kind == kindUnicode && c[i] == escChar && i+1 < len(c):
				i += decodeUnicodeEscape(&b, c[i+1:], escChar)
			default:
				b.WriteByte(c[i])
			}
		}
	}
	return b.String()
}

// decodeBackslash decodes the escape after a backslash in E'…' and returns
// how many bytes it used.
func decodeBackslash(b *strings.Builder, s string) int {
	switch s[0] {
	case 'b':
		b.WriteByte('\b')
	case 'f':
		b.WriteByte('\f')
	case 'n':
		b.WriteByte('\n')
	case 'r':
		b.WriteByte('\r')
	case 't':
		b.WriteByte('\t')
	case 'v':
		b.WriteByte('\v')
	case '0', '1', '2', '3', '4', '5', '6', '7':
		n := 1
		for n < 3 && n < len(s) && s[n] >= '0' && s[n] <= '7' {
			n++
		}
		v, _ := strconv.ParseUint(s[:n], 8, 16)
		b.WriteByte(byte(v))
		return n
	case 'x':
		n := 1
		for n < 3 && n < len(s) && isHex(s[n]) {
			n++
		}
		if n == 1 {
			b.WriteByte('x')
			return 1
		}
		v, _ := strconv.ParseUint(s[1:n], 16, 8)
		b.WriteByte(byte(v))
		return n
	case 'u', 'U':
		w := 4
		if s[0] == 'U' {
			w = 8
		}
		if r, ok := hexRune(s[1:], w); ok {
			b.WriteRune(r)
			return 1 + w
		}
		b.WriteByte(s[0])
	default:
		b.WriteByte(s[0])
	}
	return 1
}

// decodeUnicodeEscape decodes the escape after the escape character in
// U&'…' and returns how many bytes it used.
func decodeUnicodeEscape(b *strings.Builder, s string, escChar byte) int {
	switch {
	case s[0] == escChar:
		b.WriteByte(escChar)
		return 1
	case s[0] == '+':
		if r, ok := hexRune(s[1:], 6); ok {
			b.WriteRune(r)
			return 7
		}
	default:
		if r, ok := hexRune(s, 4); ok {
			b.WriteRune(r)
			return 4
		}
	}
	b.WriteByte(escChar) // invalid: the server rejects the string
	return 0
}

func hexRune(s string, w int) (rune, bool) {
	if len(s) < w {
		return 0, false
	}
	v, err := strconv.ParseUint(s[:w], 16, 32)
	if err != nil || !utf8.ValidRune(rune(v)) {
		return 0, false
	}
	return rune(v), true
}

// encodeString escapes s as the content of a string of the given kind.
func encodeString(s string, kind int, escChar byte) string {
	switch kind {
	case kindEscape:
		s = strings.ReplaceAll(s, `\`, `\\`)
	case kindUnicode:
		s = strings.ReplaceAll(s, string(escChar), string([]byte{escChar, escChar}))
	}
	return strings.ReplaceAll(s, `'`, `''`)
}

// placeholderLen returns the length of a {{name}} placeholder at the start of
// s, or 0. Only identifier-like names are placeholders: '{{1,2},{3,4}}' is an
// array literal, while a misspelt {{nmae}} is reported by lookup.
func placeholderLen(s string) int {
	if !strings.HasPrefix(s, "{{") {
		return 0
	}
	end := strings.Index(s[2:], "}}")
	if end < 0 || !isPlaceholderName(strings.TrimSpace(s[2:2+end])) {
		return 0
	}
	return end + 4
}

func placeholderName(p string) string { return strings.TrimSpace(p[2 : len(p)-2]) }

func isPlaceholderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && isDigit(c))) {
			return false
		}
	}
	return true
}

// dollarTag returns the opening tag ($$ or $name$) at the start of s.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		ch := s[j]
		if ch == '$' {
			return s[:j+1], true
		}
		if !(isIdentStart(ch) || (j > 1 && isDigit(ch))) {
			return "", false
		}
	}
	return "", false
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// asciiLower folds a name as PostgreSQL folds unquoted names in UTF-8:
// ASCII letters only (strings.ToLower would fold a lookalike such as the
// long s of plpgſql into plpgsql, which the server does not).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func isHex(c byte) bool { return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// QuoteLiteral quotes s as an SQL string literal. A value holding a
// backslash is written E'…', so its meaning does not depend on
// standard_conforming_strings.
func QuoteLiteral(s string) string {
	if strings.Contains(s, `\`) {
		// E'' makes the meaning independent of standard_conforming_strings.
		return `E'` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `''`) + `'`
	}
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// QuoteIdent quotes a role, database or other name as an SQL identifier.
func QuoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// DollarQuote wraps body in a dollar-quote tag that does not occur in it,
// so no body can end the quote early: $pgvault$, else $pgvault_1$, ...
func DollarQuote(body string) string {
	tag := "$pgvault$"
	for n := 1; strings.Index(body+tag, tag) < len(body); n++ {
		tag = "$pgvault_" + strconv.Itoa(n) + "$"
	}
	return tag + body + tag
}
