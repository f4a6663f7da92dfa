package brokertest

import (
	"bytes"
	"flag"
	"strings"

	"github.com/commandcontrol/commandcontrol/broker"
)

// MissingFlagHelp returns the entries of broker.Flags' help (as
// flag.PrintDefaults writes them, one per flag) that help, a program's
// --help output, does not hold word for word: a main that takes the
// shared broker flags lists every one of them as the others do.
func MissingFlagHelp(help string, standalone bool) (missing []string, total int) {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	var want bytes.Buffer
	fs.SetOutput(&want)
	(&broker.Flags{Standalone: standalone}).Register(fs)
	fs.PrintDefaults()
	for _, entry := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(want.String(), "  -"), "\n"), "\n  -") {
		total++
		if !strings.Contains(help, "  -"+entry+"\n") {
			missing = append(missing, "  -"+entry)
		}
	}
	return missing, total
}
