// Package config reads Tidings' one TOML file (shared/DESIGN.md
// §Configuration): the types, their defaults, validation, and the no-config
// local mode.
//
// Invariants:
//
//   - Every key has a default; a Config returned by Load or Local is complete
//     and valid, so callers never check for zero values again.
//   - An unknown key is an error naming the key; a wrong value is an error
//     naming the key and saying what is allowed. Every error is one line that
//     begins with "config: ", because the binary prints it as it is.
//   - Secrets may be given in a file instead (the *_file variant of a key);
//     the file's content, trimmed of surrounding white space, is the value.
//     Setting both forms is an error.
//   - Local mode (no config file) listens only on 127.0.0.1 at unprivileged
//     ports, so a first run needs no root and no database server.
//   - Nothing here is global: a Config is a value, and two servers with two
//     configs can run in one process.
//
// Certificates (tls.go) live here too because every front end with TLS
// shares them: the pairs named by [[tls.certificate]] are chosen by SNI, and
// without any, a self-signed certificate is made once into the data
// directory.
package config
