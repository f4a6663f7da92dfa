package bench

import (
	"fmt"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// BenchmarkCollect50k: the workbench's share of a 50,000-machine call —
// every reply's subject parsed for the machine that sent it, JSON
// checked, machine matched and counted.
func BenchmarkCollect50k(b *testing.B) {
	const n = 50000
	targets := make([]string, n)
	msgs := make([]*nats.Msg, n)
	for i := range targets {
		targets[i] = fmt.Sprintf("10.%d.%d.%d_sim%d", i>>16&255, i>>8&255, i&255, i)
		m := nats.NewMsg(fleet.CallReply("UKEY", fleet.MachineToken(targets[i]), "call", 0))
		m.Header.Set(fleet.HeaderMachine, targets[i])
		m.Header.Set(fleet.HeaderFunction, "current-load")
		m.Data = []byte(`{"load1":0.3,"load5":0.54,"load15":0.91,"procs_running":3,"procs_blocked":0,"cpus":2}`)
		msgs[i] = m
	}
	b.ReportAllocs()
	for b.Loop() {
		cl := newCollector("current-load", targets, func(Reply) {})
		for _, m := range msgs {
			cl.handle(m, cl.replyTarget(m.Subject))
		}
		if s := cl.summary(); s.NumOK != n {
			b.Fatalf("%d ok", s.NumOK)
		}
	}
}

// BenchmarkSelect50k: choosing the machines a selector names among 50,000
// ONLINE ones.
func BenchmarkSelect50k(b *testing.B) {
	servers := make([]fleet.Server, 50000)
	for i := range servers {
		servers[i] = fleet.Server{Machine: fmt.Sprintf("10.%d.%d.%d_web%d", i>>16&255, i>>8&255, i&255, i),
			Labels: map[string]string{"role": []string{"web", "db", "cache"}[i%3], "location": []string{"New-Brunswick", "Newark"}[i%2]}}
	}
	sel, err := ParseSelector("role=web,location=New-Brunswick,hostname=web1*")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if got := sel.Filter(servers); len(got) == 0 {
			b.Fatal("nothing selected")
		}
	}
}

// BenchmarkFilterMatch: evaluating `load1 > 10` on one reply.
func BenchmarkFilterMatch(b *testing.B) {
	f, err := ParseFilter("load1 > 10 and cpus >= 2")
	if err != nil {
		b.Fatal(err)
	}
	res := []byte(`{"load1":12.4,"load5":0.54,"load15":0.91,"procs_running":3,"procs_blocked":0,"cpus":2}`)
	b.ReportAllocs()
	for b.Loop() {
		if !f.Match(res) {
			b.Fatal("no match")
		}
	}
}
