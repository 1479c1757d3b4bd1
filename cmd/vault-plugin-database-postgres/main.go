// Command vault-plugin-database-postgres serves the PostgreSQL database
// secrets plugin to Vault over go-plugin's gRPC, multiplexed so that one
// process serves every mount and connection that uses it.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/database/dbplugin/v5"

	postgres "github.com/pgvault/vault-plugin-database-postgres"
)

const name = "vault-plugin-database-postgres"

// parentPollInterval is how often the plugin checks that the process that
// started it (Vault) is still its parent.
const parentPollInterval = 500 * time.Millisecond

func main() {
	if err := run(os.Args[1:]); err != nil {
		hclog.New(&hclog.LoggerOptions{Name: name}).Error("plugin shutting down", "error", err)
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
	// Created before Serve redirects os.Stderr into go-plugin's stream,
	// which nobody reads once Vault is gone.
	logger := hclog.New(&hclog.LoggerOptions{Name: name, Output: os.Stderr, JSONFormat: true})
	go watchParent(logger, os.Getppid(), parentPollInterval)
	servePprof(logger)
	plugin.Serve(conf)
	return nil
}

// watchParent exits the process when the process that started it is no
// longer its parent. Vault ends its plugins over gRPC, but a Vault killed
// by SIGKILL or the OOM killer cannot, and go-plugin's server notices
// neither the closed connection nor the lost parent: the plugin would keep
// serving, re-parented to init, with its connection pools and the root
// credentials in memory. A re-parented process gets a new parent pid, so
// polling getppid works on every Unix without help from Vault.
func watchParent(logger hclog.Logger, parent int, interval time.Duration) {
	for range time.Tick(interval) {
		if now := os.Getppid(); now != parent {
			logger.Error("the process that started the plugin is gone (Vault was killed?); exiting",
				"parent_pid", parent, "new_parent_pid", now)
			os.Exit(1)
		}
	}
}
