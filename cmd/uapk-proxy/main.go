// Command uapk-proxy puts an AI agent's calls to an ERP/GL API under policy,
// approval and a hash-chained audit ledger. See README.md and
// docs/reference.md; the commands live in internal/cli.
package main

import (
	"os"

	"github.com/uapk-gateway/uapk-proxy/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() { os.Exit(cli.Main(version, os.Args[1:])) }
