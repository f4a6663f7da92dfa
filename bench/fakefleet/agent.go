// Package fakefleet stands in for the control service and the agents in
// tests of workbench code (the bench SDK, cc-bench, operators' own scripts):
// small real NATS responders that speak the fleet wire
// contract (presence snapshot and events, control API, function calls with
// the machine header and micro error headers). It needs a running broker and
// imports nothing of nats-server; the full-stack end-to-end test, with the
// real broker, control service and agents, lives with those components.
package fakefleet

import (
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// ErrSilent, returned by a [Handler], makes the agent not answer at all.
var ErrSilent = errors.New("do not reply")

// Handler answers a function call: a result, a *fleet.Error, or ErrSilent.
type Handler func(fn string, args map[string]any) (any, error)

// Echo answers every call with {"machine": id, "fn": fn, "args": args}.
func Echo(id string) Handler {
	return func(fn string, args map[string]any) (any, error) {
		return map[string]any{"machine": id, "fn": fn, "args": args}, nil
	}
}

// Result answers every call with v.
func Result(v any) Handler { return func(string, map[string]any) (any, error) { return v, nil } }

// Fail answers every call with the error code and description.
func Fail(code int, description string) Handler {
	return func(string, map[string]any) (any, error) { return nil, fleet.Errorf(code, "%s", description) }
}

// Silent never answers.
func Silent() Handler { return func(string, map[string]any) (any, error) { return nil, ErrSilent } }

// Agent is a fake agent: it answers calls on its own function subjects and
// on the broadcast subjects, like the real one.
type Agent struct {
	ID string
	nc *nats.Conn
}

// StartAgent connects machine id to the broker at url and serves h.
func StartAgent(url, id string, h Handler, opts ...nats.Option) (*Agent, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name(id)}, opts...)...)
	if err != nil {
		return nil, err
	}
	a := &Agent{ID: id, nc: nc}
	serve := func(msg *nats.Msg) { a.serve(msg, h) }
	for _, subj := range []string{fleet.FnRoot + "." + fleet.MachineToken(id) + ".*", fleet.AllRoot + ".*"} {
		if _, err := nc.Subscribe(subj, serve); err != nil {
			nc.Close()
			return nil, err
		}
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return a, nil
}

func (a *Agent) serve(msg *nats.Msg, h Handler) {
	_, fn, err := fleet.ParseFnSubject(msg.Subject)
	if err != nil {
		return
	}
	var args map[string]any
	if len(msg.Data) > 0 {
		if err := json.Unmarshal(msg.Data, &args); err != nil {
			_ = msg.RespondMsg(errorReply(a.ID, fleet.Errorf(fleet.CodeBadRequest, "bad arguments: %v", err)))
			return
		}
	}
	res, err := h(fn, args)
	if errors.Is(err, ErrSilent) {
		return
	}
	if err != nil {
		var fe *fleet.Error
		if !errors.As(err, &fe) {
			fe = fleet.Errorf(fleet.CodeInternal, "%v", err)
		}
		_ = msg.RespondMsg(errorReply(a.ID, fe))
		return
	}
	body, _ := json.Marshal(res)
	reply := nats.NewMsg(msg.Reply)
	reply.Header.Set(fleet.HeaderMachine, a.ID)
	reply.Data = body
	_ = msg.RespondMsg(reply)
}

// errorReply is a reply carrying fe in the micro error headers, from
// machine (none when "").
func errorReply(machine string, fe *fleet.Error) *nats.Msg {
	m := nats.NewMsg("")
	if machine != "" {
		m.Header.Set(fleet.HeaderMachine, machine)
	}
	m.Header.Set(fleet.HeaderErrorCode, itoa(fe.Code))
	m.Header.Set(fleet.HeaderError, fe.Description)
	return m
}

// Close disconnects the agent.
func (a *Agent) Close() { a.nc.Close() }
