package fleet

import (
	"fmt"
	"strings"
)

// Prefix is the root of every commandcontrol subject.
const Prefix = "sys.commandControl"

// Subject roots and fixed subjects.
const (
	// FnRoot prefixes direct calls: FnRoot.<machine-token>.<function>.
	FnRoot = Prefix + ".fn"
	// AllRoot prefixes broadcast calls: AllRoot.<function>.
	AllRoot = Prefix + ".all"
	// PresenceSnapshotSubject answers a [PresenceSnapshot].
	PresenceSnapshotSubject = Prefix + ".presence.snapshot"
	// PresenceEventRoot prefixes presence events:
	// PresenceEventRoot.<joined|left>.<machine-token>.
	PresenceEventRoot = Prefix + ".presence.event"
	// PresenceEventsWildcard matches every presence event.
	PresenceEventsWildcard = PresenceEventRoot + ".>"
	// CtlRoot prefixes control API requests: CtlRoot.<operator-key>.<op>.
	CtlRoot = Prefix + ".ctl"
	// AgentHintSubject carries the control service's [AgentHint] to every
	// agent; only the control service may publish on it.
	AgentHintSubject = Prefix + ".agent.hint"
	// InboxRoot prefixes every operator's private reply inbox.
	InboxRoot = "_INBOX_cc"
)

// AgentServiceName is the nats micro service name every agent registers,
// so `nats micro ls cc-agent` lists the fleet.
const AgentServiceName = "cc-agent"

// ControlServiceName is the nats micro service name of the control API.
const ControlServiceName = "cc-control"

// FnSubject is the subject on which the operator whose public nkey is
// caller calls function fn on one machine:
// FnRoot.<machine-token>.<function>.<caller>. The broker lets an operator
// publish calls only with its own key as the last token, so whoever reads
// a call (the agent, the control service's audit) knows who sent it.
func FnSubject(machineID, fn, caller string) string {
	return FnRoot + "." + MachineToken(machineID) + "." + fn + "." + caller
}

// AllSubject is the subject on which caller calls fn on every agent:
// AllRoot.<function>.<caller>.
func AllSubject(fn, caller string) string { return AllRoot + "." + fn + "." + caller }

// PresenceEventSubject is the subject a presence event is published on.
func PresenceEventSubject(event, machineID string) string {
	return PresenceEventRoot + "." + event + "." + MachineToken(machineID)
}

// CtlSubject is the control API subject for op, sent by the operator whose
// public nkey is operatorKey. Only that operator may publish under its key
// (nobody holds a response permission that could be aimed there), so the
// control service knows who asks from the subject alone.
func CtlSubject(operatorKey, op string) string { return CtlRoot + "." + operatorKey + "." + op }

// OperatorInbox is the inbox prefix the operator with public nkey operatorKey
// must use (nats.CustomInboxPrefix, `nats --inbox-prefix`). The broker lets
// each operator subscribe only under its own prefix, so no identity reads
// another's replies.
func OperatorInbox(operatorKey string) string { return InboxRoot + "." + operatorKey }

// Subscription and permission patterns.
const (
	// DirectCallsWildcard matches every direct call.
	DirectCallsWildcard = FnRoot + ".>"
	// BroadcastsWildcard matches every broadcast call.
	BroadcastsWildcard = AllRoot + ".>"
	// BroadcastCallsWildcard is what an agent subscribes to for
	// broadcasts: AllRoot.<function>.<caller>.
	BroadcastCallsWildcard = AllRoot + ".*.*"
	// InboxesWildcard matches every operator's replies.
	InboxesWildcard = InboxRoot + ".>"
)

// MachineCallsWildcard matches the direct calls to the machine with token
// tok: what its agent subscribes to.
func MachineCallsWildcard(tok string) string { return FnRoot + "." + tok + ".*.*" }

// CallerCallsWildcards match every direct and broadcast call the operator
// with key caller may send.
func CallerCallsWildcards(caller string) []string {
	return []string{FnRoot + ".*.*." + caller, AllRoot + ".*." + caller}
}

// CallerFnWildcards match the direct and broadcast calls of function fn
// the operator with key caller may send.
func CallerFnWildcards(fn, caller string) []string {
	return []string{FnRoot + ".*." + fn + "." + caller, AllSubject(fn, caller)}
}

// CtlWildcard matches every control API request of the operator with key
// operatorKey.
func CtlWildcard(operatorKey string) string { return CtlRoot + "." + operatorKey + ".>" }

// CtlOpWildcard matches control API requests for op from any operator:
// what the control service serves.
func CtlOpWildcard(op string) string { return CtlRoot + ".*." + op }

// OperatorInboxWildcard matches every reply in the inbox of the operator
// with key operatorKey.
func OperatorInboxWildcard(operatorKey string) string { return OperatorInbox(operatorKey) + ".>" }

// IsInboxSubject reports whether subject is in an operator's inbox (a
// reply), as opposed to a call.
func IsInboxSubject(subject string) bool { return strings.HasPrefix(subject, InboxRoot+".") }

// Call is a parsed call subject.
type Call struct {
	// Token is the machine token of a direct call, "" for a broadcast.
	Token string
	// Function is the function called.
	Function string
	// Caller is the calling operator's public key, as the broker checked.
	Caller string
}

// ParseFnSubject splits a direct or broadcast call subject.
func ParseFnSubject(subject string) (Call, error) {
	var c Call
	var parts []string
	switch {
	case strings.HasPrefix(subject, FnRoot+"."):
		parts = strings.Split(strings.TrimPrefix(subject, FnRoot+"."), ".")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return Call{}, fmt.Errorf("malformed call subject %q: want %s.<machine>.<function>.<caller key>", subject, FnRoot)
		}
		c = Call{Token: parts[0], Function: parts[1], Caller: parts[2]}
	case strings.HasPrefix(subject, AllRoot+"."):
		parts = strings.Split(strings.TrimPrefix(subject, AllRoot+"."), ".")
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return Call{}, fmt.Errorf("malformed call subject %q: want %s.<function>.<caller key>", subject, AllRoot)
		}
		c = Call{Function: parts[0], Caller: parts[1]}
	default:
		return Call{}, fmt.Errorf("subject %q is not a call subject", subject)
	}
	return c, nil
}

// ParseCtlSubject splits a control API subject into the operator's public
// key and op.
func ParseCtlSubject(subject string) (operator, op string, err error) {
	rest, ok := strings.CutPrefix(subject, CtlRoot+".")
	if !ok {
		return "", "", fmt.Errorf("subject %q is not a control subject", subject)
	}
	operator, op, ok = strings.Cut(rest, ".")
	if !ok || operator == "" || op == "" {
		return "", "", fmt.Errorf("malformed control subject %q: want %s.<operator>.<op>", subject, CtlRoot)
	}
	return operator, op, nil
}
