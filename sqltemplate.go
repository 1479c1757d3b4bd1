package postgres

import (
	"embed"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// The plugin's long SQL (the revocation and label DO blocks, the reaper's
// query) lives in sql/*.sql, embedded at build time. A value the plugin
// fills in is marked with a comment before a NULL placeholder, as river's
// sqlctemplate does, so every file stays valid SQL (or PL/pgSQL, for a DO
// body) that an editor or psql can check as it is:
//
//	r text := /* @role */ NULL;
//
// fill replaces the marker and its NULL with the value, already quoted for
// SQL by the caller.

//go:embed sql/*.sql
var sqlFiles embed.FS

// sqlMarker matches a marker with its placeholder; group 1 is the name.
var sqlMarker = regexp.MustCompile(`/\* @([a-z_]+) \*/ NULL`)

// sqlTemplate is an embedded SQL file split at its markers.
type sqlTemplate struct {
	name  string   // the file, for errors
	src   string   // the file as embedded
	text  []string // the text around the markers: one more than marks
	marks []string // marker names, in order
}

// loadSQL reads and splits an embedded file. The files are part of the
// binary, so a missing one is a build mistake that fails at start-up (and
// in every test).
func loadSQL(name string) sqlTemplate {
	src, err := sqlFiles.ReadFile("sql/" + name)
	if err != nil {
		panic(err)
	}
	src = []byte(stripLineComments(string(src)))
	t := sqlTemplate{name: name, src: string(src)}
	last := 0
	for _, m := range sqlMarker.FindAllStringSubmatchIndex(string(src), -1) {
		t.text = append(t.text, string(src[last:m[0]]))
		t.marks = append(t.marks, string(src[m[2]:m[3]]))
		last = m[1]
	}
	t.text = append(t.text, string(src[last:]))
	return t
}

// fill puts each value in place of its marker, in one pass, so a value is
// never searched for markers. A marker without a value, or a value without
// a marker, is an error: the SQL and the Go that fills it disagree.
func (t sqlTemplate) fill(vals map[string]string) (string, error) {
	var b strings.Builder
	for i, mark := range t.marks {
		v, ok := vals[mark]
		if !ok {
			return "", fmt.Errorf("sql/%s: no value for marker @%s", t.name, mark)
		}
		b.WriteString(t.text[i])
		b.WriteString(v)
	}
	b.WriteString(t.text[len(t.marks)])
	for _, k := range slices.Sorted(maps.Keys(vals)) {
		if !slices.Contains(t.marks, k) {
			return "", fmt.Errorf("sql/%s: has no marker @%s", t.name, k)
		}
	}
	return b.String(), nil
}

// mustFill fills a file whose values are fixed when the plugin starts; a
// mismatch is a build mistake that fails at start-up (and in every test).
func mustFill(t sqlTemplate, vals map[string]string) string {
	sql, err := t.fill(vals)
	if err != nil {
		panic(err)
	}
	return sql
}

// stripLineComments drops the lines that are only a -- comment. They explain
// the files to their readers; the server would lex them again on every run
// (a DO body is compiled each time) and log them with every revocation.
func stripLineComments(src string) string {
	lines := strings.Split(src, "\n")
	out := lines[:0]
	for _, l := range lines {
		if !strings.HasPrefix(strings.TrimLeft(l, " \t"), "--") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
