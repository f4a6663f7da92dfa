package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// historyOf reads every history entry as viewer seed file key.
func historyOf(t *testing.T, url, key string, opts bench.HistoryOptions) *bench.History {
	t.Helper()
	c, err := bench.Connect(url, bench.WithSeedFile(key))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := c.History(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func machinesOf(t *testing.T, url, key string) map[string]fleet.Machine {
	t.Helper()
	c, err := bench.Connect(url, bench.WithSeedFile(key))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := c.Machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fleet.Machine{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

// TestPresenceHistory (issue 15, presence history): real agents join;
// one is stopped (its connection closed), one's host stalls (the broker
// finds its connection stale). A viewer reads the history: joined then
// left, with the broker's reasons and the labels of the time; machines
// ls shows them OFFLINE since they left, and a machine never seen as
// such. After the control service restarts (its embedded broker too),
// last-seen and the history are still there.
func TestPresenceHistory(t *testing.T) {
	data := t.TempDir()
	svc := startControl(t, data)
	viewer := newOperator(t, svc, "viewer", fleet.RoleViewer)
	const closed, stale, never = "10.0.0.1_web01", "10.0.0.2_db01", "10.0.0.3_never"
	a := startAgent(t, svc, closed, true)
	proxy := stacktest.StartProxy(t, svc.ClientURL())
	b := startAgentAt(t, svc, proxy.URL(), stale, true, map[string]string{"role": "db"})
	stacktest.RegisterMachine(t, svc, never, nil)
	stacktest.WaitFor(t, "both ONLINE", 10*time.Second, func() bool {
		return stacktest.Online(svc, a.MachineID()) && stacktest.Online(svc, b.MachineID())
	})
	on := machinesOf(t, svc.ClientURL(), viewer)[closed]
	if !on.Online || on.Seen == nil || !on.Seen.Online || on.Seen.Since.IsZero() {
		t.Fatalf("an ONLINE machine's seen: %+v", on.Seen)
	}

	a.Close()
	proxy.Pause() // the db host stops answering: the broker's pings go unanswered
	var h *bench.History
	stacktest.WaitFor(t, "both left in the history", 20*time.Second, func() bool {
		h = historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{})
		return len(h.Entries) == 4
	})
	b.Close() // before the proxy lets it through again: it must not reconnect
	proxy.Resume()
	byMachine := map[string][]fleet.HistoryEntry{}
	for _, e := range h.Entries {
		byMachine[e.Machine] = append(byMachine[e.Machine], e)
	}
	for id, reason := range map[string]string{closed: "Client Closed", stale: "Stale Connection"} {
		es := byMachine[id]
		if len(es) != 2 || es[0].Event != fleet.EventJoined || es[1].Event != fleet.EventLeft || es[1].Reason != reason ||
			es[1].Time.Before(es[0].Time) || es[0].Labels["role"] == "" {
			t.Errorf("%s's history: %+v, want joined then left with %q", id, es, reason)
		}
	}
	if h.Retention != controlsvc.DefaultHistoryRetention || h.Oldest.IsZero() {
		t.Errorf("retention %v, oldest %v", h.Retention, h.Oldest)
	}
	// --where db, by the labels recorded.
	if db := historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{Where: mustSelector(t, "role=db")}); len(db.Entries) != 2 || db.Entries[0].Machine != stale {
		t.Errorf("history where role=db: %+v", db.Entries)
	}

	check := func(when string, url string) {
		t.Helper()
		ms := machinesOf(t, url, viewer)
		for id, e := range map[string]fleet.HistoryEntry{closed: byMachine[closed][1], stale: byMachine[stale][1]} {
			m := ms[id]
			if m.Online || m.Seen == nil || m.Seen.Online || !m.Seen.Since.Equal(e.Time) || !m.Seen.LastSeen.Equal(e.Time) || m.Seen.Reason != e.Reason {
				t.Errorf("%s: %s seen %+v, want OFFLINE since %v (%s)", when, id, m.Seen, e.Time, e.Reason)
			}
		}
		if m := ms[never]; m.Online || m.Seen != nil {
			t.Errorf("%s: a machine never seen: %+v", when, m.Seen)
		}
	}
	check("before the restart", svc.ClientURL())

	svc.Close()
	svc2 := startControl(t, data)
	viewer2 := viewer // the registry, its operators too, survive
	check("after the restart", svc2.ClientURL())
	h2 := historyOf(t, svc2.ClientURL(), viewer2, bench.HistoryOptions{})
	if len(h2.Entries) != 4 {
		t.Fatalf("history after the restart: %+v", h2.Entries)
	}
	for i := range h2.Entries {
		if h2.Entries[i].Seq != h.Entries[i].Seq || h2.Entries[i].Reason != h.Entries[i].Reason {
			t.Errorf("entry %d after the restart: %+v, was %+v", i, h2.Entries[i], h.Entries[i])
		}
	}
}

func mustSelector(t *testing.T, s string) bench.Selector {
	t.Helper()
	sel, err := bench.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// TestThreatHistoryStoresConfined: the presence history and the
// last-seen records live in the CONTROL account's JetStream: neither an
// admin operator nor a machine can read them, forge a leave or rewrite a
// machine's last seen (the broker refuses every attempt, and the stores
// hold only what presence recorded). Only the control API's history and
// machines.list read them out.
func TestThreatHistoryStoresConfined(t *testing.T) {
	svc := startControl(t, "")
	const id = "10.0.0.1_web01"
	agentKey := stacktest.NewKey(t)
	stacktest.RegisterKey(t, svc, id, stacktest.Pub(t, agentKey), map[string]string{"role": "web"})
	machine, machineErrs := permConn(t, svc.ClientURL(), agentKey, id)
	stacktest.WaitFor(t, "machine ONLINE", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
	opKey, _ := nkeys.FromSeed(mustRead(t, newOperator(t, svc, "mallory", fleet.RoleAdmin)))
	op, opErrs := permConn(t, svc.ClientURL(), opKey, "mallory")
	forged := []byte(`{"event":"left","machine":"10.0.0.1_web01","time":"2030-01-01T00:00:00Z","reason":"forged"}`)
	for who, c := range map[string]struct {
		nc   *nats.Conn
		errs chan error
	}{"machine": {machine, machineErrs}, "admin operator": {op, opErrs}} {
		for _, s := range []struct {
			what string
			try  func() error
		}{
			{"forge a history entry", func() error { return c.nc.Publish("cc.history.left."+fleet.MachineToken(id), forged) }},
			{"rewrite a last-seen record", func() error {
				return c.nc.Publish("$KV."+controlsvc.LastSeenBucket+".machine.MTAuMC4wLjFfd2ViMDE", forged)
			}},
			{"read the history directly", func() error {
				return c.nc.PublishRequest("$JS.API.DIRECT.GET."+controlsvc.HistoryStream, fleet.OperatorInbox(stacktest.Pub(t, opKey)), []byte(`{"seq":1}`))
			}},
			{"follow the history", func() error { _, err := c.nc.SubscribeSync(controlsvc.HistorySubjectPrefix + ">"); return err }},
			{"follow last-seen", func() error { _, err := c.nc.SubscribeSync("$KV." + controlsvc.LastSeenBucket + ".>"); return err }},
		} {
			if err := s.try(); err != nil {
				t.Fatalf("%s: %s: %v", who, s.what, err)
			}
			expectViolation(t, c.errs, who+": "+s.what)
		}
	}
	machine.Close()
	viewer := newOperator(t, svc, "viewer", fleet.RoleViewer)
	var h *bench.History
	stacktest.WaitFor(t, "the real leave in the history", 10*time.Second, func() bool {
		h = historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{})
		return len(h.Entries) == 2
	})
	for _, e := range h.Entries {
		if e.Reason == "forged" || e.Machine != id {
			t.Fatalf("history holds %+v", e)
		}
	}
	if seen := machinesOf(t, svc.ClientURL(), viewer)[id].Seen; seen == nil || seen.Reason == "forged" || seen.Since.Year() == 2030 {
		t.Fatalf("last seen: %+v", seen)
	}
}

// TestHistoryRetention: the control service keeps joins and leaves for
// its History.Retention (cc-control --history-retention), here a second:
// an agent's join is in the history, then gone, and the reply says older
// entries were deleted; the machine's last seen is kept regardless.
func TestHistoryRetention(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		History: controlsvc.HistoryConfig{Retention: time.Second},
		Logger:  stacktest.Logger().With("side", "control"),
	})
	viewer := newOperator(t, svc, "viewer", fleet.RoleViewer)
	a := startAgent(t, svc, "10.0.0.1_web01", true)
	stacktest.WaitFor(t, "the join in the history", 10*time.Second, func() bool {
		return len(historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{}).Entries) == 1
	})
	stacktest.WaitFor(t, "the join past the retention, gone", 15*time.Second, func() bool {
		h := historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{})
		return len(h.Entries) == 0 && h.Trimmed && h.Retention == time.Second
	})
	if seen := machinesOf(t, svc.ClientURL(), viewer)[a.MachineID()].Seen; seen == nil || !seen.Online {
		t.Fatalf("last seen after the history expired: %+v", seen)
	}
}
