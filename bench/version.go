package bench

import (
	"context"
	"sort"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// ControlVersion asks the control service which build it runs
// ([fleet.OpVersion]; any operator, a viewer too). With several replicas
// one of them answers, naming itself in Replica.
func (c *Client) ControlVersion(ctx context.Context) (*fleet.ControlVersion, error) {
	var v fleet.ControlVersion
	if err := c.Control(ctx, fleet.OpVersion, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// UnknownVersion is the version of an agent that reported none in its
// facts (an older agent, or facts not yet received).
const UnknownVersion = "unknown"

// AgentVersion is one version of cc-agent among the selected ONLINE
// machines: the machines running it, sorted.
type AgentVersion struct {
	Version  string   `json:"version"`
	Machines []string `json:"machines"`
}

// AgentVersions groups the ONLINE machines sel selects by the agent
// version they report in their facts ([fleet.Facts.AgentVersion];
// [UnknownVersion] for none): the version most machines run first, then
// by version.
func (c *Client) AgentVersions(ctx context.Context, sel Selector) ([]AgentVersion, error) {
	servers, err := c.Servers(ctx, sel)
	if err != nil {
		return nil, err
	}
	return agentVersions(servers), nil
}

// agentVersions groups servers by their agent's version.
func agentVersions(servers []fleet.Server) []AgentVersion {
	by := map[string][]string{}
	for _, s := range servers {
		v := UnknownVersion
		if s.Facts != nil && s.Facts.AgentVersion != "" {
			v = s.Facts.AgentVersion
		}
		by[v] = append(by[v], s.Machine)
	}
	out := make([]AgentVersion, 0, len(by))
	for v, ms := range by {
		sort.Strings(ms)
		out = append(out, AgentVersion{Version: v, Machines: ms})
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i].Machines) != len(out[j].Machines) {
			return len(out[i].Machines) > len(out[j].Machines)
		}
		return out[i].Version < out[j].Version
	})
	return out
}
