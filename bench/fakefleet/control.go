package fakefleet

import (
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

func itoa(n int) string { return strconv.Itoa(n) }

// Control is a fake control service: it keeps the presence list, answers
// snapshot requests, publishes joined / left events with a sequence number,
// and serves the control API from an in-memory registry.
type Control struct {
	// Now gives event and registry times (default time.Now).
	Now func() time.Time
	// BeforeSnapshot and AfterSnapshot, when set, run while a snapshot
	// request is answered: before the list is taken, and after it is taken
	// but before it is sent. Tests use them to publish events in the gaps.
	BeforeSnapshot, AfterSnapshot func()

	nc        *nats.Conn
	mu        sync.Mutex
	seq       uint64
	servers   map[string]fleet.Server
	machines  map[string]fleet.Machine
	pending   map[string]fleet.Pending
	operators map[string]fleet.Operator // by name
}

// StartControl connects to the broker at url and serves.
func StartControl(url string, opts ...nats.Option) (*Control, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("fake-cc-control")}, opts...)...)
	if err != nil {
		return nil, err
	}
	c := &Control{
		Now: time.Now, nc: nc,
		servers: map[string]fleet.Server{}, machines: map[string]fleet.Machine{},
		pending: map[string]fleet.Pending{}, operators: map[string]fleet.Operator{},
	}
	if _, err := nc.Subscribe(fleet.PresenceSnapshotSubject, c.snapshot); err != nil {
		nc.Close()
		return nil, err
	}
	if _, err := nc.Subscribe(fleet.CtlRoot+".*.>", c.ctl); err != nil {
		nc.Close()
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Close disconnects.
func (c *Control) Close() { c.nc.Close() }

// Join marks machine id ONLINE with labels (registering it if needed) and
// publishes a joined event.
func (c *Control) Join(id string, labels map[string]string) {
	c.mu.Lock()
	c.seq++
	now := c.Now()
	c.servers[id] = fleet.Server{Machine: id, Labels: labels, Since: now, Connections: 1}
	if _, ok := c.machines[id]; !ok {
		c.machines[id] = fleet.Machine{ID: id, Key: "U" + id, Labels: labels, AddedAt: now, AddedBy: "test"}
	}
	ev := fleet.PresenceEvent{Event: fleet.EventJoined, Machine: id, Labels: labels, Time: now, Seq: c.seq}
	c.mu.Unlock()
	c.publish(ev)
}

// Leave marks machine id OFFLINE and publishes a left event.
func (c *Control) Leave(id, reason string) {
	c.mu.Lock()
	c.seq++
	srv := c.servers[id]
	delete(c.servers, id)
	ev := fleet.PresenceEvent{Event: fleet.EventLeft, Machine: id, Labels: srv.Labels, Time: c.Now(), Seq: c.seq, Reason: reason}
	c.mu.Unlock()
	c.publish(ev)
}

// AddOperator registers an operator.
func (c *Control) AddOperator(op fleet.Operator) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.operators[op.Name] = op
}

// AddPending records a machine that tried to connect.
func (c *Control) AddPending(p fleet.Pending) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending[p.ID] = p
}

func (c *Control) publish(ev fleet.PresenceEvent) {
	body, _ := json.Marshal(ev)
	_ = c.nc.Publish(fleet.PresenceEventSubject(ev.Event, ev.Machine), body)
	_ = c.nc.Flush()
}

func (c *Control) snapshot(msg *nats.Msg) {
	if c.BeforeSnapshot != nil {
		c.BeforeSnapshot()
	}
	c.mu.Lock()
	snap := fleet.PresenceSnapshot{Seq: c.seq, Time: c.Now(), Servers: []fleet.Server{}}
	for _, s := range c.servers {
		snap.Servers = append(snap.Servers, s)
	}
	c.mu.Unlock()
	sort.Slice(snap.Servers, func(i, j int) bool { return snap.Servers[i].Machine < snap.Servers[j].Machine })
	if c.AfterSnapshot != nil {
		c.AfterSnapshot()
	}
	body, _ := json.Marshal(snap)
	_ = msg.Respond(body)
}

func (c *Control) ctl(msg *nats.Msg) {
	key, op, err := fleet.ParseCtlSubject(msg.Subject)
	if err != nil {
		return
	}
	c.mu.Lock()
	reply, ferr := c.serveCtl(key, op, msg.Data)
	c.mu.Unlock()
	if ferr != nil {
		_ = msg.RespondMsg(errorReply("", ferr))
		return
	}
	body, _ := json.Marshal(reply)
	_ = msg.Respond(body)
}

func (c *Control) operatorByKey(key string) (fleet.Operator, bool) {
	for _, o := range c.operators {
		if o.Key == key {
			return o, true
		}
	}
	return fleet.Operator{}, false
}
