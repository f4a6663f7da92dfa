package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Function is one function the selected machines serve, as
// [Client.Functions] gathers it from their agents.
type Function struct {
	fleet.FunctionInfo
	// Described is false when no machine serving it described it (agents
	// that send only the names): ReadOnly, Help and Args are then
	// unknown.
	Described bool `json:"described"`
	// Differs is set when the machines serving it describe it
	// differently (other arguments, another role): the description is
	// the one most of them give.
	Differs bool `json:"differs,omitempty"`
	// Machines are the machines serving it, sorted.
	Machines []string `json:"machines"`
}

// Catalog is what the selected machines serve.
type Catalog struct {
	// Functions, sorted by name.
	Functions []Function
	// Asked is how many selected ONLINE machines were asked;
	// NoAnswer lists those that did not answer in time, sorted.
	Asked    int
	NoAnswer []string
	// Malformed lists the machines whose answer could not be read or
	// named another machine (each with why), sorted; they count as not
	// answering.
	Malformed []string
}

// ErrDiscoveryNotAllowed: listing the fleet's functions asks every agent
// by nats micro discovery, which the broker lets only admins send.
var ErrDiscoveryNotAllowed = errors.New("only an admin may ask the agents what they serve (micro discovery)")

// Functions asks the ONLINE machines sel selects which functions they
// serve, with each function's arguments and whether it only reads. It
// asks each machine by micro discovery ($SRV.INFO.cc-agent.<its instance
// id>, fleet.AgentInstanceID) with a reply subject under that machine's
// own discovery inbox (fleet.MachineDiscoveryInbox), which the broker
// lets no other machine publish on: every request is sent at once and
// the answers come on one subscription, until all of them answered or
// ctx ends (the default deadline when ctx has none): the ones that did
// not are in NoAnswer. Only an admin may send discovery requests
// ([ErrDiscoveryNotAllowed]).
//
// An answer is attributed to the machine its subject names, never to
// the id its body gives: a body naming another machine is Malformed.
// What a machine says it serves is its own word, and nothing but this
// listing follows from it.
func (c *Client) Functions(ctx context.Context, sel Selector) (*Catalog, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	who, err := c.WhoAmI(ctx)
	if err != nil {
		return nil, fmt.Errorf("functions: %w", err)
	}
	if who.Role != fleet.RoleAdmin {
		return nil, fmt.Errorf("functions: %w; operator %s has role %s", ErrDiscoveryNotAllowed, who.Operator, who.Role)
	}
	servers, err := c.Servers(ctx, sel)
	if err != nil {
		return nil, err
	}
	want := make(map[string]bool, len(servers))
	asked := make([]string, 0, len(servers))
	for _, s := range servers {
		if !want[s.Machine] {
			want[s.Machine] = true
			asked = append(asked, s.Machine)
		}
	}
	cat := &Catalog{Asked: len(want)}
	if len(want) == 0 {
		return cat, nil
	}
	nonce := nuid.Next()
	sub, err := c.nc.SubscribeSync(fleet.MachineDiscoveryReplies(c.key, nonce))
	if err != nil {
		return nil, fmt.Errorf("functions: %w", err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	for _, m := range asked {
		ask := fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, fleet.AgentInstanceID(m))
		if err := c.nc.PublishRequest(ask, fleet.MachineDiscoveryInbox(c.key, m)+"."+nonce, nil); err != nil {
			return nil, fmt.Errorf("functions: asking %s: %w", m, err)
		}
	}
	answers := map[string][]fleet.FunctionInfo{}
	described := map[string]bool{}
	bad := map[string]string{}
	take := func(msg *nats.Msg) {
		// The machine whose credentials sent it: the broker lets only
		// that machine publish under its discovery inbox.
		_, machine, _, err := fleet.ParseMachineDiscoveryReply(msg.Subject)
		if err != nil || !want[machine] {
			return // not selected, or no machine's answer
		}
		if _, dup := answers[machine]; dup {
			return
		}
		if _, dup := bad[machine]; dup {
			return
		}
		named, fns, desc, err := readInfo(msg.Data)
		if err == nil && named != machine {
			err = fmt.Errorf("its answer names machine %q", named)
		}
		if err != nil {
			bad[machine] = err.Error()
			return
		}
		answers[machine], described[machine] = fns, desc
	}
	for len(answers)+len(bad) < len(want) {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			// The deadline: what arrived is read, the rest did not
			// answer.
			for len(answers)+len(bad) < len(want) {
				if m, err = sub.NextMsg(0); err != nil {
					break
				}
				take(m)
			}
			break
		}
		take(m)
	}
	for _, m := range asked {
		if _, ok := answers[m]; !ok {
			if why, ok := bad[m]; ok {
				cat.Malformed = append(cat.Malformed, m+": "+why)
			}
			cat.NoAnswer = append(cat.NoAnswer, m)
		}
	}
	sort.Strings(cat.NoAnswer)
	sort.Strings(cat.Malformed)
	cat.Functions = mergeFunctions(answers, described)
	return cat, nil
}

// readInfo reads an agent's INFO answer: the machine it names (which
// the caller checks against the machine that sent it), the functions it
// describes (or names only: described false).
func readInfo(data []byte) (machine string, fns []fleet.FunctionInfo, described bool, err error) {
	var info micro.Info
	if err := json.Unmarshal(data, &info); err != nil {
		return "", nil, false, fmt.Errorf("not a micro INFO answer: %v", err)
	}
	if info.Type != micro.InfoResponseType || info.Name != fleet.AgentServiceName {
		return "", nil, false, fmt.Errorf("not an INFO answer of %s", fleet.AgentServiceName)
	}
	machine = info.Metadata["machine"]
	if spec, ok := info.Metadata[fleet.AgentFunctionsMeta]; ok {
		fns, err = fleet.DecodeFunctionInfos(spec)
		return machine, fns, err == nil, err
	}
	for _, name := range strings.Split(info.Metadata[fleet.AgentFunctionNamesMeta], ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if err := fleet.ValidateName("function name", name); err != nil {
			return machine, nil, false, err
		}
		fns = append(fns, fleet.FunctionInfo{Name: name})
		if len(fns) > fleet.MaxFunctionInfos {
			return machine, nil, false, fmt.Errorf("more than %d functions", fleet.MaxFunctionInfos)
		}
	}
	return machine, fns, false, nil
}

// mergeFunctions turns each machine's functions into one entry per
// function name: the machines serving it, and the description most of
// the describing machines give.
func mergeFunctions(answers map[string][]fleet.FunctionInfo, described map[string]bool) []Function {
	type variant struct {
		info     fleet.FunctionInfo
		machines int
	}
	type entry struct {
		machines []string
		variants []variant
	}
	by := map[string]*entry{}
	for machine, fns := range answers {
		seen := map[string]bool{}
		for _, f := range fns {
			if seen[f.Name] {
				continue
			}
			seen[f.Name] = true
			e := by[f.Name]
			if e == nil {
				e = &entry{}
				by[f.Name] = e
			}
			e.machines = append(e.machines, machine)
			if !described[machine] {
				continue
			}
			found := false
			for i := range e.variants {
				if reflect.DeepEqual(e.variants[i].info, f) {
					e.variants[i].machines++
					found = true
					break
				}
			}
			if !found {
				e.variants = append(e.variants, variant{info: f, machines: 1})
			}
		}
	}
	out := make([]Function, 0, len(by))
	for name, e := range by {
		sort.Strings(e.machines)
		f := Function{FunctionInfo: fleet.FunctionInfo{Name: name}, Machines: e.machines}
		if len(e.variants) > 0 {
			sort.Slice(e.variants, func(i, j int) bool {
				if e.variants[i].machines != e.variants[j].machines {
					return e.variants[i].machines > e.variants[j].machines
				}
				a, _ := json.Marshal(e.variants[i].info)
				b, _ := json.Marshal(e.variants[j].info)
				return string(a) < string(b)
			})
			f.FunctionInfo, f.Described, f.Differs = e.variants[0].info, true, len(e.variants) > 1
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
