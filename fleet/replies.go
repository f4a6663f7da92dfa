package fleet

import (
	"fmt"
	"strconv"
	"strings"
)

// Reply subjects. Every answer to a call travels on
//
//	_INBOX_cc.<caller>.<target>.<call>[.<copy>…]
//
// where caller is the calling operator's public key (the inbox owner),
// target is the answering machine's token, call identifies the call and
// copy the copy of it (a re-send has a reply subject of its own). The
// broker lets a machine publish only under _INBOX_cc.*.<its own token>.>,
// so the target token of a reply is the machine whose credentials sent it:
// a reply is attributed by its subject, never by a header the sender wrote.
//
// A broadcast is sent with the target [ReplyToAll]; each agent answers on
// the same subject with that token replaced by its own. Micro discovery
// ($SRV.PING/INFO/STATS) is answered on the caller's [DiscoveryInbox],
// which every agent may publish under (what it says there is its own
// word, unattributed), or on a [MachineDiscoveryInbox], which names the
// answering machine like a call's reply does: `cc-bench functions` asks
// each machine there, so an answer is attributed by its subject.
//
// A call token never begins with '@': the tokens that do (@all, @srv,
// @ctl) are the inbox's own, and a subject with one in the call position
// ([MachineDiscoveryInbox]) is no call's reply ([ParseCallReply]).
const (
	// ReplyToAll is the target token of a broadcast's reply subject.
	// It cannot be a machine token ('@' is not allowed in machine ids).
	ReplyToAll = "@all"
	// replyToDiscovery is the target token under which agents answer
	// micro discovery requests.
	replyToDiscovery = "@srv"
	// replyToControl is the token under which the control service
	// answers control and snapshot requests: not a machine's, so its
	// answers can never stand in for a machine's.
	replyToControl = "@ctl"
)

// ControlInbox is the inbox prefix an operator's client uses for control
// API and presence snapshot requests (the SDK's nats.CustomInboxPrefix,
// `nats --inbox-prefix`): the control service answers only there.
func ControlInbox(caller string) string {
	return InboxRoot + "." + caller + "." + replyToControl
}

// IsControlReply reports whether reply is a subject in the control inbox
// of the operator with key caller: the only place the control service
// answers that operator.
func IsControlReply(reply, caller string) bool {
	return strings.HasPrefix(reply, ControlInbox(caller)+".")
}

// ControlReplies is the subject pattern the control service's serving
// user may publish answers on.
func ControlReplies() string { return InboxRoot + ".*." + replyToControl + ".>" }

// CallReply is the reply subject of copy n of call on target (a machine
// token, or [ReplyToAll]) for caller.
func CallReply(caller, target, call string, n int) string {
	return InboxRoot + "." + caller + "." + target + "." + call + "." + strconv.Itoa(n)
}

// CallReplies is the wildcard that matches every reply to call: one
// subscription a caller makes per call.
func CallReplies(caller, call string) string {
	return InboxRoot + "." + caller + ".*." + call + ".>"
}

// DirectInbox is the inbox prefix a hand-made request to one machine uses
// (`nats req --inbox-prefix`): the machine may answer under it.
func DirectInbox(caller, machineID string) string {
	return InboxRoot + "." + caller + "." + MachineToken(machineID)
}

// DiscoveryInbox is the inbox prefix under which every agent may answer
// micro discovery ($SRV.PING/INFO/STATS): `nats micro ls --inbox-prefix`.
// Discovery answers are what an agent says of itself, nothing more.
func DiscoveryInbox(caller string) string {
	return InboxRoot + "." + caller + "." + replyToDiscovery
}

// MachineDiscoveryInbox is the inbox prefix under which the machine with
// id machineID answers micro discovery asked by caller:
// _INBOX_cc.<caller>.<machine token>.@srv. Only that machine may publish
// there (its [MachineReplies]), so an answer under it is that machine's,
// whatever its body says. It is no call's reply subject: [ParseCallReply]
// refuses @srv as a call token.
func MachineDiscoveryInbox(caller, machineID string) string {
	return InboxRoot + "." + caller + "." + MachineToken(machineID) + "." + replyToDiscovery
}

// MachineDiscoveryReplies is the subscription that receives every
// machine's answer to caller's discovery requests sent with the reply
// subject [MachineDiscoveryInbox](caller, machine) + "." + nonce: one
// subscription for any number of machines asked at once.
func MachineDiscoveryReplies(caller, nonce string) string {
	return InboxRoot + "." + caller + ".*." + replyToDiscovery + "." + nonce
}

// ParseMachineDiscoveryReply returns the caller and the machine of a
// subject under a [MachineDiscoveryInbox]
// (_INBOX_cc.<caller>.<machine token>.@srv.<rest>), and rest. The machine
// is the one whose credentials published on the subject: the broker lets
// no other. It refuses anything else (a call's reply, the shared
// [DiscoveryInbox], a token that is no machine's), saying which.
func ParseMachineDiscoveryReply(subject string) (caller, machineID, rest string, err error) {
	r, err := parseReply(subject)
	if err != nil {
		return "", "", "", err
	}
	if r.Call != replyToDiscovery || r.Copy == "" {
		return "", "", "", fmt.Errorf("subject %q is not under a machine's discovery inbox %s.<caller key>.<machine token>.%s.<nonce>", subject, InboxRoot, replyToDiscovery)
	}
	id, err := MachineFromToken(r.Target)
	if err != nil {
		return "", "", "", fmt.Errorf("subject %q: %w", subject, err)
	}
	return r.Caller, id, r.Copy, nil
}

// MachineReplies is the subject pattern a machine with token tok may
// publish replies on; discovery answers go under DiscoveryReplies.
func MachineReplies(tok string) string { return InboxRoot + ".*." + tok + ".>" }

// DiscoveryReplies is the subject pattern under which every agent may
// answer micro discovery.
func DiscoveryReplies() string { return InboxRoot + ".*." + replyToDiscovery + ".>" }

// ReplySubject is a parsed reply subject.
type ReplySubject struct {
	// Caller is the inbox owner's key.
	Caller string
	// Target is the machine token or [ReplyToAll].
	Target string
	// Call is the call's token and Copy what follows it ("" for none).
	Call, Copy string
}

// ParseCallReply splits a reply subject _INBOX_cc.<caller>.<target>.<call>[.<copy>…].
// It refuses a call token beginning with '@' (reserved: a
// [MachineDiscoveryInbox] has @srv there), so a machine's discovery
// answer is never read as an answer to a call, nor a call answered there.
// It allocates nothing: the workbench parses every reply of a call.
func ParseCallReply(subject string) (ReplySubject, error) {
	r, err := parseReply(subject)
	if err != nil {
		return ReplySubject{}, err
	}
	if strings.HasPrefix(r.Call, "@") {
		return ReplySubject{}, fmt.Errorf("reply subject %q has the reserved token %q as its call: no call's reply (a call token never begins with '@'; %s is a machine's discovery inbox)", subject, r.Call, replyToDiscovery)
	}
	return r, nil
}

// parseReply splits _INBOX_cc.<caller>.<target>.<call>[.<copy>…] into its
// non-empty parts.
func parseReply(subject string) (ReplySubject, error) {
	rest, ok := strings.CutPrefix(subject, InboxRoot+".")
	if !ok {
		return ReplySubject{}, fmt.Errorf("reply subject %q is not under %s", subject, InboxRoot)
	}
	caller, rest, ok1 := strings.Cut(rest, ".")
	target, rest, ok2 := strings.Cut(rest, ".")
	call, cp, hasCopy := strings.Cut(rest, ".")
	if !ok1 || !ok2 || caller == "" || target == "" || call == "" || (hasCopy && cp == "") {
		return ReplySubject{}, fmt.Errorf("reply subject %q: want %s.<caller key>.<machine token or %s>.<call>[.<copy>]", subject, InboxRoot, ReplyToAll)
	}
	return ReplySubject{Caller: caller, Target: target, Call: call, Copy: cp}, nil
}

// CallReplyFor parses the reply subject of call c as the control service
// reads it: in c's caller's inbox, naming [ReplyToAll] or, for a direct
// call, c's machine token. A broadcast's reply subject may name one
// machine's token instead: that machine alone answers it (see
// [AgentReply]), so the call is one to that machine.
//
// A call to a session (c parsed by [ParseSessionFnSubject]: its Token is
// a session id) has one reply subject: the session answers only on its
// own id's (its publish permission is [MachineReplies] of its id), never
// on [ReplyToAll].
func CallReplyFor(c Call, reply string) (ReplySubject, error) {
	r, err := ParseCallReply(reply)
	if err != nil {
		return ReplySubject{}, err
	}
	if r.Caller != c.Caller {
		return ReplySubject{}, fmt.Errorf("reply subject %q is not the caller's inbox %s", reply, OperatorInbox(c.Caller))
	}
	if IsSessionID(c.Token) {
		if r.Target == c.Token {
			return r, nil
		}
		return ReplySubject{}, fmt.Errorf("reply subject %q names target %q, not the call's session %s: a session answers only on %s.%s.%s.<call>[.<copy>]",
			reply, r.Target, c.Token, InboxRoot, c.Caller, c.Token)
	}
	if r.Target == ReplyToAll || r.Target == c.Token {
		return r, nil
	}
	if c.Token == "" {
		if _, err := MachineFromToken(r.Target); err == nil {
			return r, nil
		}
		return ReplySubject{}, fmt.Errorf("reply subject %q names target %q, which is no machine token nor %s", reply, r.Target, ReplyToAll)
	}
	return ReplySubject{}, fmt.Errorf("reply subject %q names target %q, not the call's machine or %s", reply, r.Target, ReplyToAll)
}

// InboxOwner returns the operator key of an _INBOX_cc.<key>.… subject.
func InboxOwner(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, InboxRoot+".")
	if !ok {
		return "", false
	}
	key, _, _ := strings.Cut(rest, ".")
	return key, key != ""
}

// AgentReply returns the subject on which the machine with token tok
// answers a call from caller that asked for replies on reply: the reply
// subject itself when it names the machine, with the machine's token in
// place of [ReplyToAll] for a broadcast. It refuses a reply subject that
// is not the caller's own inbox, or that names another target: the broker
// would refuse the answer anyway, and a caller cannot make one identity's
// call land in another's inbox.
func AgentReply(reply, caller, tok string) (string, error) {
	r, err := ParseCallReply(reply)
	if err != nil {
		return "", err
	}
	if r.Caller != caller {
		return "", fmt.Errorf("reply subject %q is not the caller's inbox %s", reply, OperatorInbox(caller))
	}
	switch r.Target {
	case tok:
		return reply, nil
	case ReplyToAll:
		out := InboxRoot + "." + caller + "." + tok + "." + r.Call
		if r.Copy != "" {
			out += "." + r.Copy
		}
		return out, nil
	}
	return "", fmt.Errorf("reply subject %q names target %q, not this machine (%s) or %s", reply, r.Target, tok, ReplyToAll)
}

// CheckCallID accepts a call id (the [HeaderCallID] header) only when it is
// the call token of the call's reply subject ("" is no id: accepted). An
// agent runs a call id once, and the control service's audit tells calls
// apart by their reply subjects' call tokens: were the two free, copies
// with other ids under one token would each run and be audited as one.
func CheckCallID(reply, id string) error {
	if id == "" {
		return nil
	}
	r, err := ParseCallReply(reply)
	if err != nil {
		return err
	}
	if r.Call != id {
		return fmt.Errorf("the %s header %q is not the call token %q of the reply subject %s: give each call its own token, and every copy of it the same %s", HeaderCallID, id, r.Call, reply, HeaderCallID)
	}
	return nil
}
