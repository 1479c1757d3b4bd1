package release

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCheckVersion(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"v0.1.0", "v1.2.3", "v10.20.30", "v1.2.3-rc.1", "v1.2.3-alpha.beta.1", "v1.2.3+build.5", "v1.0.0-0.3.7"} {
		if err := CheckVersion(v); err != nil {
			t.Errorf("CheckVersion(%q) = %v, want nil", v, err)
		}
	}
	for v, hint := range map[string]string{
		"1.2.3":       "lacks the v prefix",
		"":            "not v-prefixed semantic versioning",
		"v1.2":        "not v-prefixed semantic versioning",
		"v1":          "not v-prefixed semantic versioning",
		"v01.2.3":     "not v-prefixed semantic versioning",
		"v1.2.3-":     "not v-prefixed semantic versioning",
		"v1.2.3-01":   "not v-prefixed semantic versioning",
		"V1.2.3":      "not v-prefixed semantic versioning",
		"v1.2.3 ":     "not v-prefixed semantic versioning",
		"v1.2.3;rm":   "not v-prefixed semantic versioning",
		"v1.2.3/../x": "not v-prefixed semantic versioning",
		"latest":      "not v-prefixed semantic versioning",
	} {
		err := CheckVersion(v)
		if err == nil || !strings.Contains(err.Error(), hint) {
			t.Errorf("CheckVersion(%q) = %v, want an error saying %q", v, err, hint)
		}
	}
}

func TestBaseName(t *testing.T) {
	t.Parallel()
	if got, want := BaseName("v1.2.3-rc.1", Target{"darwin", "arm64"}), "vault-plugin-database-postgres_1.2.3-rc.1_darwin_arm64"; got != want {
		t.Fatalf("BaseName = %q, want %q", got, want)
	}
}

// TestZipIsAFunctionOfTheBinary: the same bytes zipped at two different
// times, from two files with different modification times, give the same
// zip, and that zip unpacks to an executable named after the plugin.
func TestZipIsAFunctionOfTheBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	content := bytes.Repeat([]byte("not really a binary\x00\x01"), 1000)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := os.WriteFile(a, content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, content, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(b, time.Now().Add(-48*time.Hour), time.Now().Add(-48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	za, zb := filepath.Join(dir, "a.zip"), filepath.Join(dir, "b.zip")
	if err := WriteZip(za, Plugin, a); err != nil {
		t.Fatal(err)
	}
	if err := WriteZip(zb, Plugin, b); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(za)
	bb, _ := os.ReadFile(zb)
	if !bytes.Equal(ba, bb) {
		t.Fatal("zipping the same bytes twice gave two different zips")
	}

	zr, err := zip.OpenReader(za)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if len(zr.File) != 1 {
		t.Fatalf("the zip holds %d entries, want 1", len(zr.File))
	}
	f := zr.File[0]
	if f.Name != Plugin || f.Mode().Perm() != 0o755 || !f.Modified.Equal(zipTime) {
		t.Fatalf("zip entry %q mode %v time %v, want %q 0755 %v", f.Name, f.Mode(), f.Modified, Plugin, zipTime)
	}
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the zip does not unpack to the binary (err %v)", err)
	}
}

// TestReleaseIsReproducible builds the host platform's release twice, the
// second time from a copy of the source in another directory, through the
// same code `make release` runs, and compares the bytes. It then checks
// what an operator checks: SHA256SUMS verifies with sha256sum, the binary
// reports the version, and the zip holds that very binary.
func TestReleaseIsReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin twice")
	}
	host := Target{runtime.GOOS, runtime.GOARCH}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	const version = "v0.0.1-repro.1"
	dist := t.TempDir()
	r, err := Build(ctx, Options{Root: repoRoot(t), Dist: dist, Version: version, Targets: []Target{host}})
	if err != nil {
		t.Fatal(err)
	}
	if err := Reproduce(ctx, repoRoot(t), r); err != nil {
		t.Fatal(err)
	}

	a := r.Artifact(host)
	if out, err := exec.Command(a.Binary, "-version").Output(); err != nil || strings.TrimSpace(string(out)) != version {
		t.Fatalf("%s -version = %q (%v), want %s", a.Binary, out, err, version)
	}
	if sha, err := exec.LookPath("sha256sum"); err == nil {
		cmd := exec.Command(sha, "-c", SumsFile)
		cmd.Dir = dist
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sha256sum -c %s: %v\n%s", SumsFile, err, out)
		}
	}
	sums, _ := os.ReadFile(r.Sums)
	for _, line := range []string{a.BinarySHA256 + "  " + BaseName(version, host), a.ZipSHA256 + "  " + BaseName(version, host) + ".zip"} {
		if !strings.Contains(string(sums), line+"\n") {
			t.Errorf("%s lacks %q:\n%s", SumsFile, line, sums)
		}
	}
	zr, err := zip.OpenReader(a.Zip)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	rc, err := zr.File[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	inZip, _ := io.ReadAll(rc)
	rc.Close()
	bin, _ := os.ReadFile(a.Binary)
	if !bytes.Equal(inZip, bin) {
		t.Fatal("the zip does not hold the binary SHA256SUMS lists")
	}
	if got, want := r.RegisterCommand(a), "vault plugin register -sha256="+a.BinarySHA256+" -version="+version+" database "+Plugin; got != want {
		t.Fatalf("register command\n%s\nwant\n%s", got, want)
	}
}

// TestBuildRefusesABadVersion: nothing is built, and dist is left alone.
func TestBuildRefusesABadVersion(t *testing.T) {
	t.Parallel()
	dist := t.TempDir()
	keep := filepath.Join(dist, Plugin+"_0.1.0_linux_amd64")
	if err := os.WriteFile(keep, []byte("earlier release"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), Options{Root: repoRoot(t), Dist: dist, Version: "1.2.3"}); err == nil {
		t.Fatal("Build accepted version 1.2.3")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("a refused build touched dist: %v", err)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}
