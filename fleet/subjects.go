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

// FnSubject is the subject that calls function fn on one machine.
func FnSubject(machineID, fn string) string {
	return FnRoot + "." + MachineToken(machineID) + "." + fn
}

// AllSubject is the subject that calls function fn on every agent.
func AllSubject(fn string) string { return AllRoot + "." + fn }

// PresenceEventSubject is the subject a presence event is published on.
func PresenceEventSubject(event, machineID string) string {
	return PresenceEventRoot + "." + event + "." + MachineToken(machineID)
}

// CtlSubject is the control API subject for op, sent by the operator whose
// public nkey is operatorKey. The broker lets an operator publish only under
// its own key, so the control service knows who asks from the subject alone.
func CtlSubject(operatorKey, op string) string { return CtlRoot + "." + operatorKey + "." + op }

// OperatorInbox is the inbox prefix the operator with public nkey operatorKey
// must use (nats.CustomInboxPrefix, `nats --inbox-prefix`). The broker lets
// each operator subscribe only under its own prefix, so no identity reads
// another's replies.
func OperatorInbox(operatorKey string) string { return InboxRoot + "." + operatorKey }

// ParseFnSubject splits a direct or broadcast call subject into the machine
// token ("" for a broadcast) and the function name.
func ParseFnSubject(subject string) (token, fn string, err error) {
	switch {
	case strings.HasPrefix(subject, FnRoot+"."):
		rest := strings.TrimPrefix(subject, FnRoot+".")
		tok, f, ok := strings.Cut(rest, ".")
		if !ok || tok == "" || f == "" || strings.Contains(f, ".") {
			return "", "", fmt.Errorf("malformed call subject %q: want %s.<machine>.<function>", subject, FnRoot)
		}
		return tok, f, nil
	case strings.HasPrefix(subject, AllRoot+"."):
		f := strings.TrimPrefix(subject, AllRoot+".")
		if f == "" || strings.Contains(f, ".") {
			return "", "", fmt.Errorf("malformed call subject %q: want %s.<function>", subject, AllRoot)
		}
		return "", f, nil
	}
	return "", "", fmt.Errorf("subject %q is not a call subject", subject)
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
