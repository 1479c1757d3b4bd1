// Command funclen fails when a function is longer than the project allows:
// 60 lines in the plugin's packages (its tests included), 80 anywhere else.
// The limit goes by package, not by directory: the plugin's packages are the
// one at the repository root and every package of this module it imports,
// directly or not (internal/sqlrender), since that is the code the plugin
// binary runs. `make lint` runs it, so a function that
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
	"strconv"
	"strings"
)

const (
	pluginLimit = 60
	otherLimit  = 80
)

func main() {
	plugin, err := pluginPackages()
	if err != nil {
		fmt.Fprintln(os.Stderr, "funclen:", err)
		os.Exit(2)
	}
	var long []string
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
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
		if plugin[filepath.Dir(path)] {
			limit = pluginLimit
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
		fmt.Fprintf(os.Stderr, "funclen: %d functions are too long (at most %d lines in the plugin's packages, %d elsewhere): split them at their steps\n", len(long), pluginLimit, otherLimit)
		os.Exit(1)
	}
}

// pluginPackages returns the directories of the plugin's packages: the
// root package and the packages of this module that its non-test files
// import, followed transitively.
func pluginPackages() (map[string]bool, error) {
	module, err := modulePath("go.mod")
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	for queue := []string{"."}; len(queue) > 0; queue = queue[1:] {
		if dirs[queue[0]] {
			continue
		}
		dirs[queue[0]] = true
		imports, err := moduleImports(queue[0], module)
		if err != nil {
			return nil, err
		}
		queue = append(queue, imports...)
	}
	return dirs, nil
}

// modulePath reads the module path from go.mod's module line.
func modulePath(gomod string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`), nil
		}
	}
	return "", fmt.Errorf("%s has no module line", gomod)
}

// moduleImports returns the directories of the packages of module that the
// non-test files in dir import.
func moduleImports(dir, module string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var dirs []string
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
		if err != nil {
			return nil, err
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if rel, ok := strings.CutPrefix(path, module+"/"); ok {
				dirs = append(dirs, filepath.FromSlash(rel))
			}
		}
	}
	return dirs, nil
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
