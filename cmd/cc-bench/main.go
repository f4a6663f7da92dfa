// Command cc-bench is the commandcontrol workbench: list and watch the
// ONLINE servers, call client functions on a selection of them, and manage
// the registry. See cc-bench --help.
package main

import (
	"os"

	"github.com/commandcontrol/commandcontrol/cmd/cc-bench/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdout, os.Stderr))
}
