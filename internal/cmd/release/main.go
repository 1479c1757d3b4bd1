// Command release is `make release`: it builds the release artifacts into
// dist/, checks that a second build from another directory gives the same
// bytes, and prints the command that registers the linux/amd64 binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/pgvault/vault-plugin-database-postgres/internal/release"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run() error {
	version := flag.String("version", "", "the release version, v-prefixed semver (v1.2.3)")
	dist := flag.String("dist", "dist", "the directory that receives the artifacts")
	check := flag.Bool("check", true, "build a second time from a copy of the source and compare the bytes")
	flag.Parse()
	if err := release.CheckVersion(*version); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	fmt.Printf("building %s %s for %d platforms into %s\n", release.Plugin, *version, len(release.Targets), *dist)
	r, err := release.Build(ctx, release.Options{Root: root, Dist: *dist, Version: *version})
	if err != nil {
		return err
	}
	if *check {
		fmt.Println("building again from a copy of the source to check that the release is reproducible")
		if err := release.Reproduce(ctx, root, r); err != nil {
			return err
		}
		fmt.Println("reproducible: the second build is byte-identical")
	}
	// The binary for this machine can also answer -version itself.
	host := release.Target{OS: runtime.GOOS, Arch: runtime.GOARCH}
	if a := r.Artifact(host); a != nil {
		out, err := exec.CommandContext(ctx, a.Binary, "-version").Output()
		if err != nil {
			return fmt.Errorf("%s -version: %w", a.Binary, err)
		}
		if got := strings.TrimSpace(string(out)); got != *version {
			return fmt.Errorf("%s -version printed %q, want %q", a.Binary, got, *version)
		}
	}
	sums, err := os.ReadFile(r.Sums)
	if err != nil {
		return err
	}
	fmt.Printf("\n%s:\n%s", filepath.Join(*dist, release.SumsFile), sums)
	a := r.Artifact(release.Target{OS: "linux", Arch: "amd64"})
	fmt.Printf("\nOn linux/amd64: unzip %s into Vault's plugin_directory, then\n\n  %s\n\n",
		filepath.Base(a.Zip), r.RegisterCommand(a))
	return nil
}
