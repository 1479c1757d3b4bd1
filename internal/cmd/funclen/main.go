// Command funclen fails when a function is longer than the project allows:
// 60 lines in the plugin package at the repository root (its tests
// included), 80 anywhere else. `make lint` runs it, so a function that
// outgrows one screen is split at its natural steps when it is written,
// not in a later clean-up.
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const (
	rootLimit  = 60
	otherLimit = 80
)

func main() {
	var long []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			// tools/ pins third-party programs; dot directories hold caches.
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "tools" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		limit := otherLimit
		if filepath.Dir(path) == "." {
			limit = rootLimit
		}
		found, err := longFuncs(path, limit)
		long = append(long, found...)
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "funclen:", err)
		os.Exit(2)
	}
	if len(long) > 0 {
		fmt.Fprintln(os.Stderr, strings.Join(long, "\n"))
		fmt.Fprintf(os.Stderr, "funclen: %d functions are too long (at most %d lines at the root, %d elsewhere): split them at their steps\n", len(long), rootLimit, otherLimit)
		os.Exit(1)
	}
}

// longFuncs lists the functions and methods in path longer than limit lines.
func longFuncs(path string, limit int) ([]string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var long []string
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
		if n := end.Line - start.Line + 1; n > limit {
			long = append(long, fmt.Sprintf("%s:%d: %s is %d lines", path, start.Line, fd.Name.Name, n))
		}
	}
	return long, nil
}
