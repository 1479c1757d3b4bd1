//go:build tools

// Package provider pins terraform-provider-vault (v5.9.0), which
// `make test-examples` builds and points OpenTofu at with dev_overrides. It
// is a separate module so that the provider's dependency graph never
// reaches the plugin's go.mod.
package provider

import _ "github.com/hashicorp/terraform-provider-vault"
