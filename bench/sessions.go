package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// CheckSessionQuery refuses a query whose Where names a key that is not
// one of [fleet.SessionWhereKeys], or whose Limit is negative, with an
// error that lists the keys.
func CheckSessionQuery(q fleet.SessionQuery) error {
	var empty fleet.Session
	keys := make([]string, 0, len(q.Where))
	for k := range q.Where {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := fleet.SessionAttr(&empty, k); !ok {
			return fmt.Errorf("unknown session attribute %q: use one of %s", k, strings.Join(fleet.SessionWhereKeys, ", "))
		}
	}
	if q.Limit < 0 {
		return fmt.Errorf("session query limit %d: want 0 (all) or more", q.Limit)
	}
	return nil
}

// Sessions lists the ONLINE sessions q selects, sorted by id. The control
// service selects them ([fleet.MatchSession]); Sessions checks its answer
// again, so an older service that ignored the query never widens a
// listing or a call. A large answer arrives in parts
// ([fleet.SessionSnapshot.Parts]); Sessions gathers them. It needs an
// admin, or a viewer with the sessions permission.
func (c *Client) Sessions(ctx context.Context, q fleet.SessionQuery) ([]fleet.Session, error) {
	snap, err := c.SessionSnapshot(ctx, q)
	if err != nil {
		return nil, err
	}
	return snap.Sessions, nil
}

// SessionSnapshot is [Client.Sessions] with the snapshot's sequence
// number, epoch and time (what a watch needs).
func (c *Client) SessionSnapshot(ctx context.Context, q fleet.SessionQuery) (*fleet.SessionSnapshot, error) {
	if err := CheckSessionQuery(q); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	body, err := json.Marshal(q)
	if err != nil {
		return nil, fmt.Errorf("sessions: encode query: %w", err)
	}
	for {
		snap, err := c.sessionSnapshot(ctx, body)
		if !waitToRetry(ctx, err) {
			if err != nil {
				return nil, err
			}
			return selectSessions(snap, q)
		}
	}
}

// sessionSnapshot asks on the operator's own control subject
// (fleet.OpSessionsSnapshot): the service answers into the operator's own
// control inbox, within the operator's own session snapshot limit.
func (c *Client) sessionSnapshot(ctx context.Context, body []byte) (*fleet.SessionSnapshot, error) {
	if c.key == "" {
		return nil, fmt.Errorf("sessions: %w: the session snapshot is asked on the operator's own control subject, named by its key", ErrNoKey)
	}
	subject := fleet.CtlSubject(c.key, fleet.OpSessionsSnapshot)
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	asyncErrs, stop := c.errs.listen()
	defer stop()
	if err := c.nc.PublishRequest(subject, inbox, body); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	var snap *fleet.SessionSnapshot
	for got := 0; snap == nil || got < snap.Parts; got++ {
		msg, err := nextMsg(ctx, sub, asyncErrs, subject)
		if errors.Is(err, nats.ErrNoResponders) || err == nil && isNoResponders(msg) {
			return nil, fmt.Errorf("%w on %s: is cc-control running (and does it know sessions)?", ErrNoService, subject)
		}
		if err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		if err := replyErr(msg); err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		var part fleet.SessionSnapshot
		if err := json.Unmarshal(msg.Data, &part); err != nil {
			return nil, fmt.Errorf("sessions: malformed reply: %w", err)
		}
		if snap == nil {
			snap = &part
			continue
		}
		if part.Seq != snap.Seq || part.Epoch != snap.Epoch {
			return nil, fmt.Errorf("sessions: parts of different snapshots (seq %d and %d)", snap.Seq, part.Seq)
		}
		snap.Sessions = append(snap.Sessions, part.Sessions...)
	}
	snap.Part, snap.Parts = 0, 0
	return snap, nil
}

// nextMsg waits for the next reply on sub; a broker's refusal of the
// request (the operator may not see sessions) ends the wait at once
// rather than at the deadline.
func nextMsg(ctx context.Context, sub *nats.Subscription, asyncErrs <-chan error, subject string) (*nats.Msg, error) {
	type res struct {
		msg *nats.Msg
		err error
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan res, 1)
	go func() {
		m, err := sub.NextMsgWithContext(rctx)
		ch <- res{m, err}
	}()
	for {
		select {
		case r := <-ch:
			if r.err != nil && !errors.Is(r.err, nats.ErrNoResponders) {
				return nil, fmt.Errorf("no complete reply in time: %w", r.err)
			}
			return r.msg, r.err
		case err := <-asyncErrs:
			if deniedFor(err, func(s string) bool { return s == subject }, sub.Subject) {
				cancel()
				<-ch
				return nil, fleet.Errorf(fleet.CodeForbidden, "the broker denied %s (%v): listing, watching and calling sessions needs an admin, or a viewer added with --sessions", subject, err)
			}
		}
	}
}

// selectSessions keeps the sessions of snap that q selects, sorted by id,
// at most q.Limit of them.
func selectSessions(snap *fleet.SessionSnapshot, q fleet.SessionQuery) (*fleet.SessionSnapshot, error) {
	out := snap.Sessions[:0]
	seen := make(map[string]bool, len(snap.Sessions))
	for _, s := range snap.Sessions {
		if fleet.ValidateSessionID(s.ID) != nil || seen[s.ID] {
			continue // not a session id, or twice: never a target
		}
		ok, err := fleet.MatchSession(&s, q.Where)
		if err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		if ok {
			seen[s.ID] = true
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	snap.Sessions = out
	return snap, nil
}

// AddOperatorWith registers an operator as req says, e.g. a viewer with
// the sessions permission (req.Sessions): it may then list, watch and
// call sessions.
func (c *Client) AddOperatorWith(ctx context.Context, req fleet.OperatorRequest) (*fleet.Operator, error) {
	var raw json.RawMessage
	if err := c.Control(ctx, fleet.OpOperatorsAdd, req, &raw); err != nil {
		return nil, err
	}
	return decodeOptional[fleet.Operator](raw), nil
}
