package controlsvc

import (
	"fmt"
	"unicode/utf8"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// boundClientText cuts text a client chose before it was authenticated
// (a refused connection's name or key) to fleet.AuditMaxClientText bytes:
// the audit, the pending list and the log keep at most that much of it,
// however long the client made it. A cut ends in "…(N bytes)" with N the
// whole length, at a character boundary. The text is kept as it was
// otherwise (JSON output shows it exactly); what prints it for a person
// escapes it (internal/termsafe).
func boundClientText(s string) string {
	if len(s) <= fleet.AuditMaxClientText {
		return s
	}
	mark := fmt.Sprintf("…(%d bytes)", len(s))
	n := fleet.AuditMaxClientText - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}
