package fleet

import (
	"fmt"
	"strings"
)

// The subjects an agent serves: its two micro endpoints (direct calls,
// [MachineCallsWildcard], and broadcasts, [BroadcastCallsWildcard]) and
// micro discovery. An agent subscribes to exactly these, and the control
// service grants a machine exactly these, from the same functions.

// AgentCallEndpoint and AgentBroadcastEndpoint are the names of the
// agent's micro endpoints (`nats micro info cc-agent`).
const (
	AgentCallEndpoint      = "call"
	AgentBroadcastEndpoint = "broadcast"
)

// SrvRoot is the root of nats micro discovery subjects; DiscoveryWildcard
// matches every discovery request.
const (
	SrvRoot           = "$SRV"
	DiscoveryWildcard = SrvRoot + ".>"
)

// The nats micro discovery verbs.
const (
	SrvPing  = "PING"
	SrvInfo  = "INFO"
	SrvStats = "STATS"
)

// SrvVerbs lists the discovery verbs an agent answers.
func SrvVerbs() []string { return []string{SrvPing, SrvInfo, SrvStats} }

// SrvSubject is the micro discovery subject of verb asked of every service
// (name ""), of every instance of service name (id ""), or of the
// instance id of name: $SRV.<verb>[.<name>[.<id>]].
func SrvSubject(verb, name, id string) string {
	s := SrvRoot + "." + verb
	if name != "" {
		s += "." + name
		if id != "" {
			s += "." + id
		}
	}
	return s
}

// AgentSrvSubjects are the subjects on which an agent whose service
// instance id is id answers discovery verb: asked of every service, of
// every agent, and of it alone. With id "*" they are the patterns the
// broker lets every agent receive.
func AgentSrvSubjects(verb, id string) []string {
	return []string{SrvSubject(verb, "", ""), SrvSubject(verb, AgentServiceName, ""), SrvSubject(verb, AgentServiceName, id)}
}

// AgentDiscoverySubjects are the discovery requests the agent of machine
// machineID answers and may receive: each verb asked of every service,
// of every agent, and of its own instance ([AgentInstanceID]) only, so
// no agent hears what is asked of another machine alone.
func AgentDiscoverySubjects(machineID string) []string {
	out := make([]string, 0, 3*len(SrvVerbs()))
	for _, verb := range SrvVerbs() {
		out = append(out, AgentSrvSubjects(verb, AgentInstanceID(machineID))...)
	}
	return out
}

// DiscoverySubjects are the discovery requests every instance of the
// service named service answers: each verb asked of all services, of
// service, and of one of its instances (any id): what a remote site's
// link, which carries many agents, may receive.
func DiscoverySubjects(service string) []string {
	out := make([]string, 0, 3*len(SrvVerbs()))
	for _, verb := range SrvVerbs() {
		out = append(out, SrvSubject(verb, "", ""), SrvSubject(verb, service, ""), SrvSubject(verb, service, "*"))
	}
	return out
}

// CheckDiscoveryReply accepts the reply subject of a discovery request
// only when it lies under some caller's [DiscoveryInbox]
// (_INBOX_cc.<key>.@srv.<token>…): an agent answers discovery nowhere
// else. Any other reply subject is one the asker chose to aim an agent's
// answer at, e.g. another operator's call replies, which the broker would
// let the machine publish on. The error says which prefix to ask with.
func CheckDiscoveryReply(reply string) error {
	if caller, ok := InboxOwner(reply); ok && publishable(reply) {
		if rest, ok := strings.CutPrefix(reply, DiscoveryInbox(caller)+"."); ok && rest != "" {
			return nil
		}
	}
	return fmt.Errorf("discovery reply subject %q is not under a discovery inbox: ask with `nats --inbox-prefix %s`", reply, DiscoveryInbox("<your key>"))
}

// CheckMachineDiscoveryReply accepts the reply subject of a discovery
// request sent to the machine with id machineID only when it lies under
// some caller's [MachineDiscoveryInbox] of that machine
// (_INBOX_cc.<key>.<its token>.@srv.<nonce>…): what `cc-bench functions`
// asks with, and attributes by the subject. The agent answers there or
// under a [DiscoveryInbox] ([CheckDiscoveryReply]), nowhere else.
func CheckMachineDiscoveryReply(reply, machineID string) error {
	if caller, ok := InboxOwner(reply); ok && publishable(reply) {
		if rest, ok := strings.CutPrefix(reply, MachineDiscoveryInbox(caller, machineID)+"."); ok && rest != "" {
			return nil
		}
	}
	return fmt.Errorf("discovery reply subject %q is not under this machine's discovery inbox %s", reply, MachineDiscoveryInbox("<your key>", machineID))
}

// AgentInstanceID is the micro instance id of the agent of machine
// machineID: its machine token, so a workbench can ask one machine by
// $SRV.<verb>.cc-agent.<token> without first asking every agent. No
// other agent may listen there ([AgentDiscoverySubjects]), and none could
// answer under its [MachineDiscoveryInbox].
func AgentInstanceID(machineID string) string { return MachineToken(machineID) }

// publishable reports whether subject is a literal subject a client may
// publish on: non-empty tokens, no wildcards, no white space.
func publishable(subject string) bool {
	if subject == "" || strings.ContainsAny(subject, " \t\r\n") {
		return false
	}
	for tok := range strings.SplitSeq(subject, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	return true
}
