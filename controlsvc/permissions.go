package controlsvc

import (
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
)

// DefaultReadOnlyFunctions are the functions a viewer may call: the
// read-only built-ins (fleet.BuiltinFunctions).
var DefaultReadOnlyFunctions = fleet.ReadOnlyBuiltins()

// agentPermissions: receive its own and broadcast calls, the control
// service's hints and micro discovery asked of every agent or of its own
// instance (not another machine's: cc-bench functions asks each alone);
// publish only replies under a
// subject that names the machine itself (and discovery answers). No
// response permission: with one, whoever sends the agent a request could
// aim its answer at any subject (a control subject, a presence event),
// since the requester picks the reply subject.
func agentPermissions(machineID string) jwt.Permissions {
	var p jwt.Permissions
	tok := fleet.MachineToken(machineID)
	p.Sub.Allow.Add(fleet.MachineCallsWildcard(tok), fleet.BroadcastCallsWildcard, fleet.AgentHintSubject)
	p.Sub.Allow.Add(fleet.AgentDiscoverySubjects(machineID)...)
	p.Pub.Allow.Add(fleet.MachineReplies(tok), fleet.DiscoveryReplies())
	return p
}

// operatorPermissions: publish the calls the role allows, signed with its
// own key as the subject's last token, its own control subjects and
// presence snapshot requests; an admin also micro discovery ($SRV, which
// every agent answers: one request, one reply per machine). Subscribe to
// its own inbox and to presence events only. No response permission.
//
// A viewer learns who is ONLINE from the presence snapshot, which the
// control service answers within the viewer's own limit; with $SRV a
// viewer multiplied each request by the fleet's size.
func operatorPermissions(op operatorIdentity, readOnlyFns []string) jwt.Permissions {
	var p jwt.Permissions
	if op.Role == fleet.RoleAdmin {
		p.Pub.Allow.Add(fleet.CallerCallsWildcards(op.Key)...)
	} else {
		for _, fn := range readOnlyFns {
			p.Pub.Allow.Add(fleet.CallerFnWildcards(fn, op.Key)...)
		}
	}
	p.Pub.Allow.Add(fleet.CtlWildcard(op.Key), fleet.PresenceSnapshotSubject)
	if op.Role == fleet.RoleAdmin {
		p.Pub.Allow.Add(fleet.DiscoveryWildcard)
	}
	p.Sub.Allow.Add(fleet.OperatorInboxWildcard(op.Key), fleet.PresenceEventsWildcard)
	if fleet.MaySeeSessions(op.Role, op.Sessions) {
		// Sessions: call them (signed with its own key) and watch them
		// join and leave. Who is ONLINE it asks on its own control
		// subject (ctl.<key>.sessions.snapshot, under CtlWildcard),
		// answered only if it may see sessions.
		p.Pub.Allow.Add(fleet.CallerSessionCallsWildcard(op.Key))
		p.Sub.Allow.Add(fleet.SessionEventsWildcard)
	}
	return p
}
