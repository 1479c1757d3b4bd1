# Registers vault-plugin-database-postgres in Vault, mounts a database
# secrets engine, connects it to PostgreSQL and defines a dynamic and a
# static role. `make test-examples` applies this file against a dev Vault and
# a throwaway PostgreSQL, then logs in with the credentials Vault issues.
#
# Vault's address and token come from VAULT_ADDR and VAULT_TOKEN.

terraform {
  required_version = ">= 1.6"
  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = ">= 5.0"
    }
  }
}

provider "vault" {}

# The binary must already be in Vault's plugin_directory under this command
# name; the sha256 is the one `make release` prints and SHA256SUMS lists for
# the bare binary (not the zip).
resource "vault_plugin" "postgres" {
  type    = "database"
  name    = "vault-plugin-database-postgres"
  command = var.plugin_command
  version = var.plugin_version
  sha256  = var.plugin_sha256
}

resource "vault_mount" "db" {
  path        = var.mount
  type        = "database"
  description = "PostgreSQL credentials from vault-plugin-database-postgres"
}

# The connection is written as Vault's API takes it. The provider's
# vault_database_secret_backend_connection and vault_database_secrets_mount
# cannot configure this plugin: they accept only plugin names that begin
# with a built-in engine's prefix (postgresql, mysql…), and of their `data`
# map they send only `password` (terraform-provider-vault v5.9.0–v5.11.0),
# so reassign_owned_to and terminate_sessions would never reach the plugin.
resource "vault_generic_endpoint" "connection" {
  path                 = "${vault_mount.db.path}/config/${var.connection_name}"
  ignore_absent_fields = true
  data_json = jsonencode({
    plugin_name       = vault_plugin.postgres.name
    plugin_version    = vault_plugin.postgres.version
    allowed_roles     = ["app", "app-static"]
    verify_connection = true

    connection_url = var.connection_url
    username       = var.username
    password       = var.password

    # The plugin's own parameters.
    password_authentication = "scram-sha-256"
    reassign_owned_to       = var.reassign_owned_to
    terminate_sessions      = true
  })
}

locals {
  # Naming the connection through the resource makes the roles wait for it.
  db_name = trimprefix(vault_generic_endpoint.connection.path, "${vault_mount.db.path}/config/")
}

# A new PostgreSQL user for every lease; dropped (its sessions ended, what it
# owns handed to reassign_owned_to) when the lease ends.
resource "vault_database_secret_backend_role" "app" {
  backend     = vault_mount.db.path
  name        = "app"
  db_name     = local.db_name
  default_ttl = 3600
  max_ttl     = 86400
  creation_statements = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE \"${var.app_group}\";",
  ]
}

# An existing PostgreSQL user whose password Vault rotates.
resource "vault_database_secret_backend_static_role" "app_static" {
  backend         = vault_mount.db.path
  name            = "app-static"
  db_name         = local.db_name
  username        = var.static_username
  rotation_period = 86400
}
