package e2e

import (
	"archive/zip"
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgvault/vault-plugin-database-postgres/internal/release"
	"github.com/pgvault/vault-plugin-database-postgres/internal/vaulttest"
)

// TestReleaseBinary registers and runs what is shipped: the linux/amd64
// release is built by the code `make release` runs, the binary is taken out
// of its zip after the zip's checksum is verified against SHA256SUMS, as
// the README tells operators, and Vault registers it with that sha256 and
// version and issues, uses and revokes credentials through it.
func TestReleaseBinary(t *testing.T) {
	needAll(t)
	target := release.Target{OS: "linux", Arch: "amd64"}
	if (release.Target{OS: runtime.GOOS, Arch: runtime.GOARCH}) != target {
		t.Skipf("the release binary tested is linux/amd64; this machine is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	const version = "v0.9.10-release.1"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dist := t.TempDir()
	r, err := release.Build(ctx, release.Options{Root: vaulttest.RepoRoot(), Dist: dist, Version: version, Targets: []release.Target{target}})
	must(t, err)
	a := r.Artifact(target)

	sums := readSums(t, r.Sums)
	zipSum, err := release.FileSHA256(a.Zip)
	must(t, err)
	if sums[filepath.Base(a.Zip)] != zipSum {
		t.Fatalf("%s says %s for %s, the file hashes to %s", release.SumsFile, sums[filepath.Base(a.Zip)], filepath.Base(a.Zip), zipSum)
	}
	installed := filepath.Join(t.TempDir(), vaulttest.PluginName)
	unzip(t, a.Zip, vaulttest.PluginName, installed)
	sha, err := release.FileSHA256(installed)
	must(t, err)
	if sha != sums[filepath.Base(a.Binary)] || sha != a.BinarySHA256 {
		t.Fatalf("the binary in the zip hashes to %s; %s lists %s for the bare binary", sha, release.SumsFile, sums[filepath.Base(a.Binary)])
	}
	if !strings.Contains(r.RegisterCommand(a), "-sha256="+sha+" -version="+version+" database "+vaulttest.PluginName) {
		t.Fatalf("the printed register command does not match the shipped binary: %s", r.RegisterCommand(a))
	}
	out, err := exec.CommandContext(ctx, installed, "-version").Output()
	if err != nil || strings.TrimSpace(string(out)) != version {
		t.Fatalf("%s -version = %q (%v), want %s", installed, out, err, version)
	}

	shipped := &vaulttest.Plugin{Path: installed, SHA256: sha, Version: version}
	s, c := devVaultWith(t, shipped)

	assertServes(t, c, shipped)

	a2 := superPool(t)
	write(t, c, "database/roles/shipped", map[string]interface{}{
		"db_name": "pg", "default_ttl": "1h", "creation_statements": []string{creation},
	})
	sec := read(t, c, "database/creds/shipped")
	user, pw := creds(sec)
	if err := pg.CanLogin(ctxT(t), user, pw); err != nil {
		t.Fatalf("logging in with credentials from the release binary: %v", err)
	}
	must(t, c.Sys().Revoke(sec.LeaseID))
	if roleExists(t, a2, user) {
		t.Fatalf("role %q still exists after revocation", user)
	}
	if err := pg.CanLogin(ctxT(t), user, pw); err == nil {
		t.Fatal("the revoked credentials still log in")
	}
	if n := vaulttest.CountPluginProcesses(s.PluginDir); n != 1 {
		t.Fatalf("%d processes of the release binary run under Vault, want 1", n)
	}
}

// readSums parses a SHA256SUMS file into file name → sha256.
func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("%s: malformed line %q", path, sc.Text())
		}
		sums[name] = sum
	}
	must(t, sc.Err())
	return sums
}

// unzip extracts the entry name of the zip at path into dst, executable.
func unzip(t *testing.T, path, name, dst string) {
	t.Helper()
	zr, err := zip.OpenReader(path)
	must(t, err)
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name != name {
			continue
		}
		rc, err := f.Open()
		must(t, err)
		defer rc.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, f.Mode().Perm())
		must(t, err)
		_, err = io.Copy(out, rc)
		must(t, err)
		must(t, out.Close())
		return
	}
	t.Fatalf("%s holds no %s", path, name)
}
