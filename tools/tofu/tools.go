//go:build tools

// Package tofu pins the OpenTofu CLI that `make test-examples` applies
// examples/terraform with. It is a separate module so that OpenTofu's
// dependency graph never reaches the plugin's go.mod.
package tofu

import _ "github.com/opentofu/opentofu/cmd/tofu"
