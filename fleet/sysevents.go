package fleet

import (
	"fmt"
	"strings"
)

// The broker's own subjects the control service reads and sends on its
// system connection: the account's connect/disconnect events, a server's
// shutdown event and the per-server requests (PING, CONNZ, KICK). They
// are nats-server's; they are named here so no other package spells them.
const (
	// SysRoot is the first token of every system subject.
	SysRoot = "$SYS"
	// ServerShutdownWildcard matches every server's shutdown event,
	// $SYS.SERVER.<server id>.SHUTDOWN.
	ServerShutdownWildcard = SysRoot + ".SERVER.*.SHUTDOWN"
	// ServerPingSubject asks every server of the broker cluster.
	ServerPingSubject = SysRoot + ".REQ.SERVER.PING"
	// AuthCalloutSubject is where a broker sends its auth callout requests.
	AuthCalloutSubject = SysRoot + ".REQ.USER.AUTH"
)

// AccountConnectSubject is the event a broker sends when a client of
// account connects.
func AccountConnectSubject(account string) string {
	return SysRoot + ".ACCOUNT." + account + ".CONNECT"
}

// AccountDisconnectSubject is the event a broker sends when a client of
// account disconnects.
func AccountDisconnectSubject(account string) string {
	return SysRoot + ".ACCOUNT." + account + ".DISCONNECT"
}

// ServerRequestSubject is the subject of system request verb (CONNZ,
// KICK, …) to the server with id server.
func ServerRequestSubject(server, verb string) string {
	return SysRoot + ".REQ.SERVER." + server + "." + verb
}

// ServerRequestWildcard matches request verb to any one server.
func ServerRequestWildcard(verb string) string { return ServerRequestSubject("*", verb) }

// IsSysSubject reports whether subject is a system subject ($SYS.…), as
// opposed to one renamed under a site ([SiteSysSubject]).
func IsSysSubject(subject string) bool { return strings.HasPrefix(subject, SysRoot+".") }

// ServerEvent is a parsed system event subject.
type ServerEvent struct {
	// Kind is "CONNECT" or "DISCONNECT" for an account's event, "SHUTDOWN"
	// for a server's.
	Kind string
	// Account is the account of a connect/disconnect event.
	Account string
	// Server is the server id of a shutdown event.
	Server string
}

// Server event kinds.
const (
	SysConnect    = "CONNECT"
	SysDisconnect = "DISCONNECT"
	SysShutdown   = "SHUTDOWN"
)

// ParseServerEvent splits one of the system events the control service
// watches: $SYS.ACCOUNT.<account>.CONNECT|DISCONNECT or
// $SYS.SERVER.<server id>.SHUTDOWN.
func ParseServerEvent(subject string) (ServerEvent, error) {
	rest, ok := strings.CutPrefix(subject, SysRoot+".")
	scope, rest, ok2 := strings.Cut(rest, ".")
	name, kind, ok3 := strings.Cut(rest, ".")
	if ok && ok2 && ok3 && name != "" && !strings.Contains(kind, ".") {
		switch {
		case scope == "ACCOUNT" && (kind == SysConnect || kind == SysDisconnect):
			return ServerEvent{Kind: kind, Account: name}, nil
		case scope == "SERVER" && kind == SysShutdown:
			return ServerEvent{Kind: kind, Server: name}, nil
		}
	}
	return ServerEvent{}, fmt.Errorf("subject %q is not a server event: want %s, %s or %s",
		subject, AccountConnectSubject("<account>"), AccountDisconnectSubject("<account>"), ServerShutdownWildcard)
}
