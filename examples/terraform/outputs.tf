output "dynamic_credentials_path" {
  description = "vault read this path for a new PostgreSQL user."
  value       = "${vault_mount.db.path}/creds/${vault_database_secret_backend_role.app.name}"
}

output "static_credentials_path" {
  description = "vault read this path for the static user's current password."
  value       = "${vault_mount.db.path}/static-creds/${vault_database_secret_backend_static_role.app_static.name}"
}
