package vaulttest

import (
	"context"
	"os"

	"github.com/hashicorp/vault/api"

	"github.com/pgvault/vault-plugin-database-postgres/internal/pgtest"
)

// SandboxOptions says how NewSandbox builds and starts things.
type SandboxOptions struct {
	// Version is the version the plugin is built with.
	Version string
	// BuildFlags go to `go build` (the end-to-end tests add -race).
	BuildFlags []string
	// TempPrefix names the temporary directory (os.MkdirTemp's pattern).
	TempPrefix string
	// LogLevel is Vault's -log-level; empty means debug.
	LogLevel string
	// NoVault leaves Vault for StartVault: the benchmark measures without
	// it first, and the end-to-end tests start a Vault per test.
	NoVault bool
	// Step, if set, is told each stage as it completes, for the demo's
	// narration.
	Step func(format string, args ...any)
}

// Sandbox is what every program and test against a real Vault starts
// with: the Vault binary, a temporary directory, the built plugin, a
// PostgreSQL server and (unless NoVault) a dev Vault with the plugin
// registered and the database secrets engine enabled at database/.
type Sandbox struct {
	VaultBin string
	Dir      string
	Plugin   *Plugin
	PG       *pgtest.Server
	Vault    *Server     // nil until StartVault
	Client   *api.Client // Vault.Client
	opts     SandboxOptions
}

// NewSandbox finds Vault, makes a temporary directory, builds the plugin,
// starts PostgreSQL and, unless opts.NoVault, Vault. On error it has
// already cleaned up; otherwise the caller must Close it.
func NewSandbox(ctx context.Context, opts SandboxOptions) (s *Sandbox, err error) {
	s = &Sandbox{opts: opts}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	if s.VaultBin, err = FindVault(); err != nil {
		return s, err
	}
	if s.Dir, err = os.MkdirTemp("", opts.TempPrefix); err != nil {
		return s, err
	}
	if s.Plugin, err = BuildPlugin(ctx, s.Dir, opts.Version, opts.BuildFlags...); err != nil {
		return s, err
	}
	s.step("built the plugin %s (sha256 %s…)", s.Plugin.Version, s.Plugin.SHA256[:12])
	if s.PG, err = pgtest.Start(ctx); err != nil {
		return s, err
	}
	s.step("started PostgreSQL (%s) on %s:%d with SCRAM authentication and TLS", s.PG.Source, s.PG.Host, s.PG.Port)
	if opts.NoVault {
		return s, nil
	}
	return s, s.StartVault(ctx)
}

// StartVault starts the sandbox's dev Vault in its directory, registers
// the plugin (with Plugin.Env as it is now) and enables the database
// secrets engine at database/.
func (s *Sandbox) StartVault(ctx context.Context) error {
	level := s.opts.LogLevel
	if level == "" {
		level = "debug"
	}
	v, err := StartRegistered(ctx, s.VaultBin, s.Dir, s.Plugin, level)
	if err != nil {
		return err
	}
	s.Vault, s.Client = v, v.Client
	s.step("started a Vault dev server at %s (%s)", v.Addr, s.VaultBin)
	s.step("registered %s %s in the plugin catalog with its sha256", PluginName, s.Plugin.Version)
	s.step("enabled the database secrets engine at database/")
	return nil
}

// Close stops Vault and PostgreSQL and removes the directory; it may be
// called on a partly started sandbox.
func (s *Sandbox) Close() {
	if s == nil {
		return
	}
	s.Vault.Stop()
	if s.PG != nil {
		s.PG.Stop()
	}
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
}

func (s *Sandbox) step(format string, args ...any) {
	if s.opts.Step != nil {
		s.opts.Step(format, args...)
	}
}
