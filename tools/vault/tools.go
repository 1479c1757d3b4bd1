//go:build tools

// Package vault pins the Vault server that the end-to-end tests and `make demo`
// run. It is a separate module so that Vault's large dependency graph never
// reaches the plugin's go.mod.
package vault

import _ "github.com/hashicorp/vault"
