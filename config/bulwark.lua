-- Bulwark demo configuration (what ./scripts/run starts).
-- Lua, evaluated in a sandbox. Paths are relative to this file's directory.
-- Reference of every setting: docs/configuration.md. Check a file: bulwarkd --check-config FILE

server = {
  var_dir = "../var",                        -- database, generated TLS files, initial password
  plugin_dir = "../build/lib/bulwark/plugins",
}

listen = {
  agent = { "0.0.0.0:8443", "[::]:8443" },   -- devices
  admin = { "127.0.0.1:8444", "[::1]:8444" }, -- REST API, /healthz, /metrics: keep it private
}

tls = {
  generate = true, -- self-signed ECDSA P-256 CA + server certificate in var/tls on first start
}

log = { level = "info", format = "text" }

plugins = {
  "example_hello",
  "compliance_lua",
}

example_hello = {
  greeting = "Hello",
  interval = "5m",
}

compliance_lua = {
  rules_dir = "../scripts/rules", -- the shipped example rules; see docs/rules.md
  interval = "1h",
}

include "conf.d/*.lua"
