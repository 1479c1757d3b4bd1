// Command vault-plugin-database-postgres serves the PostgreSQL database
// secrets plugin to Vault over go-plugin's gRPC, multiplexed so that one
// process serves every mount and connection that uses it.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"

	postgres "github.com/pgvault/vault-plugin-database-postgres"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		hclog.New(&hclog.LoggerOptions{Name: "vault-plugin-database-postgres"}).Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	meta := &api.PluginAPIClientMeta{}
	flags := meta.FlagSet()
	showVersion := flags.Bool("version", false, "print the plugin version and exit")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println(postgres.ReportedVersion())
		return nil
	}
	conf := dbplugin.ServeConfigMultiplex(postgres.New)
	if conf == nil {
		return errors.New("building the plugin's serve configuration failed")
	}
	// Vaults older than 1.12 hand plugins a wrapped TLS certificate instead
	// of using AutoMTLS; the provider unwraps it when present.
	conf.TLSProvider = api.VaultPluginTLSProvider(meta.GetTLSConfig())
	plugin.Serve(conf)
	return nil
}
