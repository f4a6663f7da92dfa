package agent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/version"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// service is the agent's nats micro service cc-agent: its endpoints "call"
// and "broadcast", and micro discovery ($SRV.PING, INFO and STATS), which
// it answers itself in micro's v1 schemas, so `nats micro ls/info/stats`
// show it as any micro service, with statistics that are true (see
// callStats for why micro.AddService cannot keep them). It answers
// discovery only under the asker's shared discovery inbox
// (fleet.CheckDiscoveryReply) or its own machine's
// (fleet.CheckMachineDiscoveryReply: what cc-bench functions asks with).
// Its instance id is its machine token (fleet.AgentInstanceID).
type service struct {
	nc    *nats.Conn
	log   *slog.Logger
	id    string
	ident micro.ServiceIdentity
	// specs lists the functions served now: the built-ins and the
	// operators' own, which a reload may change while connected.
	specs       func() []functions.Spec
	description string
	started     time.Time
	endpoints   []*callStats

	mu sync.Mutex
	// subs maps each endpoint's subscription to its statistics.
	subs map[*nats.Subscription]*callStats
}

// newService describes machine id's service (token tok) serving the
// functions specs lists, its statistics read from now.
func newService(nc *nats.Conn, log *slog.Logger, id, tok string, specs func() []functions.Spec, now func() time.Time) *service {
	return &service{
		nc:    nc,
		log:   log,
		specs: specs,
		id:    id,
		ident: micro.ServiceIdentity{Name: fleet.AgentServiceName, ID: fleet.AgentInstanceID(id), Version: version.Get().Semver(),
			Metadata: map[string]string{"machine": id}},
		description: "commandcontrol agent on " + id,
		started:     now().UTC(),
		endpoints: []*callStats{
			newCallStats(fleet.AgentCallEndpoint, fleet.MachineCallsWildcard(tok), now),
			newCallStats(fleet.AgentBroadcastEndpoint, fleet.BroadcastCallsWildcard, now),
		},
		subs: map[*nats.Subscription]*callStats{},
	}
}

// movedTo is s served on nc instead: the same identity and statistics
// (refreshFacts), none of s's subscriptions.
func (s *service) movedTo(nc *nats.Conn) *service {
	return &service{nc: nc, log: s.log, ident: s.ident, description: s.description, started: s.started,
		endpoints: s.endpoints, subs: map[*nats.Subscription]*callStats{}}
}

// serve subscribes the endpoints, each call going to handle with its
// receipt, and then discovery.
func (s *service) serve(handle func(receipt, *nats.Msg)) error {
	for _, ep := range s.endpoints {
		sub, err := s.nc.Subscribe(ep.subject, func(m *nats.Msg) { handle(ep.receive(), m) })
		if err != nil {
			return fmt.Errorf("agent: endpoint %s: %w", ep.name, err)
		}
		s.mu.Lock()
		s.subs[sub] = ep
		s.mu.Unlock()
	}
	for _, verb := range fleet.SrvVerbs() {
		answer := s.discovery(verb)
		for _, subj := range fleet.AgentSrvSubjects(verb, s.ident.ID) {
			if _, err := s.nc.Subscribe(subj, answer); err != nil {
				return fmt.Errorf("agent: micro discovery: %w", err)
			}
		}
	}
	return nil
}

// discovery answers verb, on the asker's discovery inbox or this
// machine's only.
func (s *service) discovery(verb string) nats.MsgHandler {
	return func(m *nats.Msg) {
		if err := fleet.CheckDiscoveryReply(m.Reply); err != nil {
			if err2 := fleet.CheckMachineDiscoveryReply(m.Reply, s.id); err2 != nil {
				s.log.Debug("micro discovery not answered: "+err.Error()+"; "+err2.Error(), "subject", m.Subject)
				return
			}
		}
		var v any
		switch verb {
		case fleet.SrvPing:
			v = s.ping()
		case fleet.SrvInfo:
			v = s.info()
		default:
			v = s.stats()
		}
		b, err := json.Marshal(v)
		if err == nil {
			err = s.nc.Publish(m.Reply, b)
		}
		if err != nil {
			s.log.Warn("micro discovery answer not sent", "verb", verb, "error", err)
		}
	}
}

func (s *service) ping() micro.Ping {
	return micro.Ping{ServiceIdentity: s.identity(false), Type: micro.PingResponseType}
}

func (s *service) info() micro.Info {
	eps := make([]micro.EndpointInfo, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		eps = append(eps, micro.EndpointInfo{Name: ep.name, Subject: ep.subject})
	}
	return micro.Info{ServiceIdentity: s.identity(true), Type: micro.InfoResponseType, Description: s.description, Endpoints: eps}
}

func (s *service) stats() micro.Stats {
	eps := make([]*micro.EndpointStats, 0, len(s.endpoints))
	for _, ep := range s.endpoints {
		st := ep.snapshot()
		eps = append(eps, &st)
	}
	return micro.Stats{ServiceIdentity: s.identity(false), Type: micro.StatsResponseType, Started: s.started, Endpoints: eps}
}

// identity is the service's identity with the functions it serves now
// in its metadata: their names (fleet.AgentFunctionNamesMeta) and, in an
// INFO answer (described), their descriptions (fleet.AgentFunctionsMeta,
// bounded; what cc-bench functions reads).
func (s *service) identity(described bool) micro.ServiceIdentity {
	id := s.ident
	id.Metadata = make(map[string]string, len(s.ident.Metadata)+2)
	for k, v := range s.ident.Metadata {
		id.Metadata[k] = v
	}
	var specs []functions.Spec
	if s.specs != nil {
		specs = s.specs()
	}
	names := make([]string, 0, len(specs))
	for _, sp := range specs {
		names = append(names, sp.Name)
	}
	id.Metadata[fleet.AgentFunctionNamesMeta] = strings.Join(names, ",")
	if described {
		infos := make([]fleet.FunctionInfo, 0, len(specs))
		for _, sp := range specs {
			fi := fleet.FunctionInfo{Name: sp.Name, ReadOnly: sp.ReadOnly, Help: sp.Help}
			for _, a := range sp.Args {
				fi.Args = append(fi.Args, fleet.FunctionArg{Name: a.Name, Type: a.Type, Help: a.Help, Required: a.Required})
			}
			infos = append(infos, fi)
		}
		id.Metadata[fleet.AgentFunctionsMeta] = fleet.EncodeFunctionInfos(infos)
	}
	return id
}

// asyncError counts an error the client library reported on sub (a slow
// consumer) when sub is one of the endpoints'.
func (s *service) asyncError(sub *nats.Subscription, err error) {
	s.mu.Lock()
	ep := s.subs[sub]
	s.mu.Unlock()
	if ep != nil {
		ep.asyncError(err)
	}
}
