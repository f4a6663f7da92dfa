package stacktest

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Request calls fn on one machine the way any client must: on the call
// subject that ends with the operator's key, with a reply subject under
// its inbox that names the machine (fleet.CallReply). nc is an operator's
// connection (nc.Opts.Nkey is its key). A "no responders" status comes
// back as nats.ErrNoResponders, as from nats.Conn.Request.
func Request(nc *nats.Conn, machine, fn string, body []byte, timeout time.Duration) (*nats.Msg, error) {
	key := nc.Opts.Nkey
	reply := fleet.CallReply(key, fleet.MachineToken(machine), nuid.Next(), 0)
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	m := &nats.Msg{Subject: fleet.FnSubject(machine, fn, key), Reply: reply, Data: body}
	if err := nc.PublishMsg(m); err != nil {
		return nil, err
	}
	msg, err := sub.NextMsg(timeout)
	if err != nil {
		if errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("%s on %s: %w", fn, machine, nats.ErrTimeout)
		}
		return nil, err
	}
	if fleet.IsNoResponders(msg.Header.Get(fleet.HeaderStatus), len(msg.Data)) {
		return nil, nats.ErrNoResponders
	}
	return msg, nil
}

// PublicKey returns the public key of an nkey seed (panics on a bad one:
// tests make their seeds).
func PublicKey(seed []byte) string {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		panic(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// Send publishes a call of fn to machine without waiting for its answer
// (the reply subject is a fresh one under the operator's inbox).
func Send(nc *nats.Conn, machine, fn string, body []byte) error {
	key := nc.Opts.Nkey
	return nc.PublishRequest(fleet.FnSubject(machine, fn, key), fleet.CallReply(key, fleet.MachineToken(machine), nuid.Next(), 0), body)
}

// Broadcast calls fn on every agent and returns a subscription to its
// replies; [Replier] says which machine sent each.
func Broadcast(nc *nats.Conn, fn string, body []byte) (*nats.Subscription, error) {
	key, call := nc.Opts.Nkey, nuid.Next()
	sub, err := nc.SubscribeSync(fleet.CallReplies(key, call))
	if err != nil {
		return nil, err
	}
	if err := nc.PublishRequest(fleet.AllSubject(fn, key), fleet.CallReply(key, fleet.ReplyToAll, call, 0), body); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

// Replier is the machine a reply's subject names: the one whose
// credentials sent it ("" when the subject names none).
func Replier(m *nats.Msg) string {
	r, err := fleet.ParseCallReply(m.Subject)
	if err != nil {
		return ""
	}
	id, err := fleet.MachineFromToken(r.Target)
	if err != nil {
		return ""
	}
	return id
}
