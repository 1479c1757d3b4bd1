// Package release builds the plugin's release artifacts: a binary per
// platform, a zip per binary as HashiCorp ships plugins, and SHA256SUMS.
// `make release` and the end-to-end tests both build through it, so the
// binary the tests register is built exactly as the shipped one is.
package release

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Plugin is the binary's name: the name inside each zip, and the name
// operators register it under.
const Plugin = "vault-plugin-database-postgres"

// versionVar is the variable the -X linker flag sets (see version.go).
const versionVar = "github.com/pgvault/vault-plugin-database-postgres.Version"

// SumsFile is the checksum file, in `sha256sum -c` format.
const SumsFile = "SHA256SUMS"

// Target is one platform a release is built for.
type Target struct {
	OS, Arch string
}

func (t Target) String() string { return t.OS + "/" + t.Arch }

// Targets are the platforms `make release` builds.
var Targets = []Target{
	{"linux", "amd64"},
	{"linux", "arm64"},
	{"darwin", "amd64"},
	{"darwin", "arm64"},
}

// semverRE is semver.org's grammar with the "v" prefix Vault requires.
var semverRE = regexp.MustCompile(`^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
	`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// CheckVersion refuses a version that is not v-prefixed semver: Vault
// refuses to register such a plugin version, so the release must too.
func CheckVersion(v string) error {
	if semverRE.MatchString(v) {
		return nil
	}
	if semverRE.MatchString("v" + v) {
		return fmt.Errorf("version %q lacks the v prefix: use VERSION=v%s", v, v)
	}
	return fmt.Errorf("version %q is not v-prefixed semantic versioning: use VERSION=vMAJOR.MINOR.PATCH, e.g. v1.2.3 or v1.2.3-rc.1", v)
}

// FileVersion is the version as it appears in file names: without the "v",
// as HashiCorp names its release files (vault_1.21.0_linux_amd64.zip).
func FileVersion(v string) string { return strings.TrimPrefix(v, "v") }

// BaseName is an artifact's name without extension:
// vault-plugin-database-postgres_1.2.3_linux_amd64.
func BaseName(version string, t Target) string {
	return fmt.Sprintf("%s_%s_%s_%s", Plugin, FileVersion(version), t.OS, t.Arch)
}

// Options say what to build.
type Options struct {
	// Root is the module root to build from.
	Root string
	// Dist receives the artifacts; it is created if missing.
	Dist string
	// Version is the release version, v-prefixed semver.
	Version string
	// Targets default to Targets.
	Targets []Target
}

// Artifact is one platform's binary and zip.
type Artifact struct {
	Target       Target
	Binary       string // path of the bare binary
	Zip          string // path of the zip holding it as Plugin
	BinarySHA256 string // what `vault plugin register -sha256` needs
	ZipSHA256    string
}

// Release is what Build produced.
type Release struct {
	Version   string
	Dist      string
	Sums      string // path of SHA256SUMS
	Artifacts []Artifact
}

// Artifact returns the artifact for t, or nil.
func (r *Release) Artifact(t Target) *Artifact {
	for i := range r.Artifacts {
		if r.Artifacts[i].Target == t {
			return &r.Artifacts[i]
		}
	}
	return nil
}

// RegisterCommand is the command that registers a's binary once it is in
// Vault's plugin_directory under the name the zip gives it.
func (r *Release) RegisterCommand(a *Artifact) string {
	return fmt.Sprintf("vault plugin register -sha256=%s -version=%s database %s", a.BinarySHA256, r.Version, Plugin)
}

// Build builds every target into opts.Dist, zips each binary, writes
// SHA256SUMS over binaries and zips, and checks that each binary carries
// the version. Earlier artifacts of this plugin in Dist are removed first,
// so SHA256SUMS never lists a file of another release.
func Build(ctx context.Context, opts Options) (*Release, error) {
	if err := CheckVersion(opts.Version); err != nil {
		return nil, err
	}
	targets := opts.Targets
	if len(targets) == 0 {
		targets = Targets
	}
	if err := os.MkdirAll(opts.Dist, 0o755); err != nil {
		return nil, err
	}
	if err := clean(opts.Dist); err != nil {
		return nil, err
	}
	r := &Release{Version: opts.Version, Dist: opts.Dist, Sums: filepath.Join(opts.Dist, SumsFile)}
	for _, t := range targets {
		a := Artifact{Target: t, Binary: filepath.Join(opts.Dist, BaseName(opts.Version, t))}
		a.Zip = a.Binary + ".zip"
		if err := BuildBinary(ctx, opts.Root, a.Binary, t, opts.Version); err != nil {
			return nil, err
		}
		if err := CheckBinaryVersion(a.Binary, t, opts.Version); err != nil {
			return nil, err
		}
		if err := WriteZip(a.Zip, Plugin, a.Binary); err != nil {
			return nil, err
		}
		var err error
		if a.BinarySHA256, err = FileSHA256(a.Binary); err != nil {
			return nil, err
		}
		if a.ZipSHA256, err = FileSHA256(a.Zip); err != nil {
			return nil, err
		}
		r.Artifacts = append(r.Artifacts, a)
	}
	if err := writeSums(r); err != nil {
		return nil, err
	}
	return r, nil
}

// clean removes this plugin's earlier artifacts and SHA256SUMS from dist,
// and nothing else.
func clean(dist string) error {
	entries, err := os.ReadDir(dist)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == SumsFile || strings.HasPrefix(e.Name(), Plugin+"_") {
			if err := os.Remove(filepath.Join(dist, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// BuildBinary builds the plugin for t into out. Everything that could make
// two builds of the same source differ is pinned: no cgo, no file system
// paths (-trimpath), no VCS stamp, no build ID, no symbol tables, and the
// environment's GOFLAGS, GOAMD64/GOARM64 and go.work are overridden.
func BuildBinary(ctx context.Context, root, out string, t Target, version string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out,
		"-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X "+versionVar+"="+version,
		"./cmd/"+Plugin)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0", "GOOS="+t.OS, "GOARCH="+t.Arch,
		"GOFLAGS=", "GOWORK=off", "GOEXPERIMENT=",
		"GOAMD64=v1", "GOARM64=v8.0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", t, err, b)
	}
	return nil
}

// CheckBinaryVersion reads the build information of a binary of any
// platform and checks that it was built for t without cgo and holds the
// version string. It is how the darwin and arm64 binaries, which cannot run
// here, are checked; `make release` also runs the host's binary with
// -version. (-trimpath keeps -ldflags out of the build information, so
// the linked value is looked for in the binary itself.)
func CheckBinaryVersion(path string, t Target, version string) error {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the build information of %s: %w", path, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["GOOS"] != t.OS || settings["GOARCH"] != t.Arch || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		return fmt.Errorf("%s was built for %s/%s with CGO_ENABLED=%s -trimpath=%s, want %s with CGO_ENABLED=0 -trimpath=true",
			path, settings["GOOS"], settings["GOARCH"], settings["CGO_ENABLED"], settings["-trimpath"], t)
	}
	// -X on a variable that does not exist is silently ignored; then the
	// version string is nowhere in the binary.
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(version)) {
		return fmt.Errorf("%s does not contain the version string %s: does %s still exist?", path, version, versionVar)
	}
	return nil
}

// zipTime is every zip entry's modification time: a fixed time keeps the
// zip's bytes a function of the binary alone. It is the earliest time the
// zip format's MS-DOS fields can hold.
var zipTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteZip writes a zip at path holding src as name, executable, with a
// fixed time: the same binary always gives the same zip.
func WriteZip(path, name, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: zipTime}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// FileSHA256 is the hex SHA-256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeSums writes SHA256SUMS over every binary and zip, sorted by name,
// in the format `sha256sum -c` reads.
func writeSums(r *Release) error {
	var lines []string
	for _, a := range r.Artifacts {
		lines = append(lines,
			a.BinarySHA256+"  "+filepath.Base(a.Binary),
			a.ZipSHA256+"  "+filepath.Base(a.Zip))
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	return os.WriteFile(r.Sums, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// Reproduce builds r again from a copy of root in another directory and
// fails unless every artifact comes out byte for byte the same: a build
// that depended on where the source sits, or on anything else that
// differs between two checkouts, would show here.
func Reproduce(ctx context.Context, root string, r *Release) error {
	tmp, err := os.MkdirTemp("", "pgvault-release-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	if err := copySource(root, src); err != nil {
		return fmt.Errorf("copying the source for the reproducibility check: %w", err)
	}
	var targets []Target
	for _, a := range r.Artifacts {
		targets = append(targets, a.Target)
	}
	again, err := Build(ctx, Options{Root: src, Dist: filepath.Join(tmp, "dist"), Version: r.Version, Targets: targets})
	if err != nil {
		return err
	}
	first, err := os.ReadFile(r.Sums)
	if err != nil {
		return err
	}
	second, err := os.ReadFile(again.Sums)
	if err != nil {
		return err
	}
	if !bytes.Equal(first, second) {
		return fmt.Errorf("the release is not reproducible: a second build from %s gave other artifacts\nfirst:\n%s\nsecond:\n%s", src, first, second)
	}
	return nil
}

// copySource copies the module's files (not .git, caches or build output)
// from root to dst.
func copySource(root, dst string) error {
	skip := map[string]bool{".git": true, ".cache": true, "dist": true, "bin": true}
	return filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if rel != "." && skip[d.Name()] {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() || d.Name() == ".git" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}
