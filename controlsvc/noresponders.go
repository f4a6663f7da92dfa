package controlsvc

import (
	"fmt"
	"strconv"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// offlineResponder answers calls no agent will answer, as the broker
// would if the control service's own subscription to every call (see
// callWatch) did not hide from it that nobody serves the subject:
// "no responders" for a direct call to a machine that is not ONLINE and
// for a broadcast when no machine is, and a 400 naming the right shape
// for a call whose reply subject no agent answers on.
type offlineResponder struct {
	machines onlineMachines
	// sessions says which sessions are ONLINE (nil: none is).
	sessions onlineSessions
	// publish sends an answer (the calls connection's PublishMsg).
	publish func(*nats.Msg) error
}

// onlineMachines is what call watching needs to know of presence.
type onlineMachines interface {
	// online reports whether machine id is ONLINE.
	online(id string) bool
	// onlineIDs lists the ONLINE machines.
	onlineIDs() []string
	// count is the number of ONLINE machines.
	count() int
}

// onlineSessions is what call watching needs to know of the sessions.
type onlineSessions interface {
	// isOnline reports whether session id is ONLINE.
	isOnline(id string) bool
}

// sessionOnline reports whether session id is ONLINE in s (nil: none is).
func sessionOnline(s onlineSessions, id string) bool {
	return s != nil && s.isOnline(id)
}

// request answers call req if no agent will.
func (r *offlineResponder) request(req callRequest) {
	call, reply := req.call, req.msg.Reply
	if req.session {
		r.sessionRequest(req)
		return
	}
	if req.replyErr != nil {
		// No agent answers it (fleet.AgentReply): nothing runs. Tell a
		// caller who asked into its own inbox what the subject must be;
		// never answer into another operator's inbox.
		if owner, ok := fleet.InboxOwner(reply); ok && owner == call.Caller {
			r.refuse(reply, fmt.Sprintf("no agent answers on the reply subject %s: use %s.<the machine's token, or %s for a broadcast>.<call id>[.<copy>]; with the nats CLI, --inbox-prefix %s",
				reply, fleet.OperatorInbox(call.Caller), fleet.ReplyToAll, fleet.DirectInbox(call.Caller, "<machine id>")))
		}
		return
	}
	if req.target == "" {
		if r.machines.count() == 0 {
			r.noResponders(reply)
		}
		return
	}
	id, err := fleet.MachineFromToken(req.target)
	if err == nil && !r.machines.online(id) {
		// Every copy: the first one, and each re-send the workbench
		// sends to machines that have not answered.
		r.noResponders(reply)
	}
}

// noResponders answers as the broker would when nobody serves a subject.
func (r *offlineResponder) noResponders(reply string) {
	m := nats.NewMsg(reply)
	m.Header.Set(fleet.HeaderStatus, fleet.StatusNoResponders)
	m.Header.Set(fleet.HeaderDescription, fleet.DescriptionNoResponders)
	_ = r.publish(m)
}

// refuse answers a request nobody will run with a 400 naming the problem.
func (r *offlineResponder) refuse(reply, desc string) {
	m := nats.NewMsg(reply)
	m.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(fleet.CodeBadRequest))
	m.Header.Set(fleet.HeaderError, desc)
	_ = r.publish(m)
}

// sessionRequest answers a call to a session that is not ONLINE "no
// responders" (each copy), and one whose reply subject the session will
// not answer on a 400 naming the right one; both only into the caller's
// own inbox.
func (r *offlineResponder) sessionRequest(req callRequest) {
	call, reply := req.call, req.msg.Reply
	if owner, ok := fleet.InboxOwner(reply); !ok || owner != call.Caller {
		return
	}
	if req.replyErr != nil {
		r.refuse(reply, fmt.Sprintf("no session answers on the reply subject %s: use %s.%s.<call id>[.<copy>]; with the nats CLI, --inbox-prefix %s.%s",
			reply, fleet.OperatorInbox(call.Caller), call.Token, fleet.OperatorInbox(call.Caller), call.Token))
		return
	}
	if !sessionOnline(r.sessions, call.Token) {
		r.noResponders(reply)
	}
}
