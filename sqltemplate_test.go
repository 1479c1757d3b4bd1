package postgres

import (
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestSQLTemplateFill(t *testing.T) {
	tmpl := sqlTemplate{name: "t.sql", text: []string{"a := ", "; b := ", ";"}, marks: []string{"x", "y"}}
	got, err := tmpl.fill(map[string]string{"x": "'/* @y */ NULL'", "y": "2"})
	if err != nil || got != "a := '/* @y */ NULL'; b := 2;" {
		t.Fatalf("fill = %q, %v (a value must not be searched for markers)", got, err)
	}
	if _, err := tmpl.fill(map[string]string{"x": "1"}); err == nil || !strings.Contains(err.Error(), "no value for marker @y") {
		t.Fatalf("missing marker value: %v", err)
	}
	if _, err := tmpl.fill(map[string]string{"x": "1", "y": "2", "z": "3"}); err == nil || !strings.Contains(err.Error(), "no marker @z") {
		t.Fatalf("unused value: %v", err)
	}
}

// TestSQLFilesMarkers checks every embedded file: each one is loaded by the
// plugin, and the markers are the ones the Go that fills it supplies.
func TestSQLFilesMarkers(t *testing.T) {
	want := map[string][]string{
		"revoke_login.sql":       {"role", "target", "create_target", "terminate", "nologin", "holding_comment"},
		"revoke_disarm.sql":      {"role"},
		"nologin_contended.sql":  {"raise_prepared", "prepared_hint"},
		"revoke_role.sql":        {"role", "terminate", "final", "hand_over", "transient", "raise_prepared", "raise_others_prepared"},
		"revoke_outcome.sql":     nil,
		"reassign_elsewhere.sql": {"role", "hand_over", "raise_others_prepared"},
		"hand_over.sql":          {"reassign"},
		"reassign_owned.sql":     {"role", "target", "create_target", "allow_privileged", "holding_comment", "transient"},
		"label_created.sql":      {"role", "label"},
		"label_renewed.sql":      {"role", "expires", "managed_by"},
		"orphan_candidates.sql":  {"managed_by"},
	}
	names, err := fs.Glob(sqlFiles, "sql/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != len(want) {
		t.Fatalf("embedded %v; the test knows %d files", names, len(want))
	}
	for _, n := range names {
		n = strings.TrimPrefix(n, "sql/")
		marks, ok := want[n]
		if !ok {
			t.Fatalf("sql/%s: not known to the test", n)
		}
		got := slices.Compact(slices.Sorted(slices.Values(loadSQL(n).marks)))
		if !slices.Equal(got, slices.Sorted(slices.Values(marks))) {
			t.Errorf("sql/%s: markers %v, want %v", n, got, marks)
		}
		// An @ outside a well-formed marker is a marker the plugin misses.
		if tm := loadSQL(n); strings.Count(tm.src, "@") != len(tm.marks) {
			t.Errorf("sql/%s: an @ outside a /* @name */ NULL marker", n)
		}
	}
}

func TestScanTextArray(t *testing.T) {
	got, err := scanTextArray(pgtype.NewMap(), []byte(`{a,"b c","d\"e"}`))
	if err != nil || strings.Join(got, "|") != `a|b c|d"e` {
		t.Fatalf("got %q, %v", got, err)
	}
	if got, err := scanTextArray(pgtype.NewMap(), []byte("{}")); err != nil || len(got) != 0 {
		t.Fatalf("empty array: %q, %v", got, err)
	}
}
