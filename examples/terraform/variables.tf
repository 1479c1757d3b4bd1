variable "plugin_version" {
  description = "The release registered, e.g. v1.2.3 (what the binary reports with -version)."
  type        = string
}

variable "plugin_sha256" {
  description = "SHA-256 of the plugin binary in plugin_directory, as `make release` prints it."
  type        = string
}

variable "plugin_command" {
  description = "The binary's file name in Vault's plugin_directory."
  type        = string
  default     = "vault-plugin-database-postgres"
}

variable "mount" {
  description = "Path of the database secrets engine."
  type        = string
  default     = "database"
}

variable "connection_name" {
  description = "Name of the connection (db_name in the roles)."
  type        = string
  default     = "pg"
}

variable "connection_url" {
  description = "PostgreSQL URL with {{username}} and {{password}} placeholders, e.g. postgres://{{username}}:{{password}}@db.example.com:5432/app?sslmode=verify-full"
  type        = string
}

variable "username" {
  description = "The PostgreSQL user Vault connects as (needs CREATEROLE)."
  type        = string
}

variable "password" {
  description = "That user's password. Rotate it with `vault write <mount>/rotate-root/<connection>` once applied."
  type        = string
  sensitive   = true
}

variable "reassign_owned_to" {
  description = "The role that receives what a revoked user owned; it must exist."
  type        = string
}

variable "app_group" {
  description = "An existing NOLOGIN role holding the application's grants; every dynamic user joins it."
  type        = string
}

variable "static_username" {
  description = "An existing PostgreSQL user whose password the static role rotates."
  type        = string
}
