package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fillHistory writes entries into the history stream as the control
// service writes them (on its CONTROL user): n joins and leaves of
// machine id, one a millisecond from at. It returns the time after the
// last.
func fillHistory(t *testing.T, js jetstream.JetStream, id string, n int, at time.Time) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range n {
		ev := fleet.HistoryJoined
		if i%2 == 1 {
			ev = fleet.HistoryLeft
		}
		b, _ := json.Marshal(fleet.HistoryEntry{Event: ev, Machine: id, Time: at, Reason: "Client Closed"})
		// On a loaded machine the broker's acks may lag the 4,096 in
		// flight for longer than the default 200 ms stall.
		if _, err := js.PublishAsync(controlsvc.HistorySubjectPrefix+ev+"."+fleet.MachineToken(id), b, jetstream.WithStallWait(30*time.Second)); err != nil {
			t.Fatal(err)
		}
		at = at.Add(time.Millisecond)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("history entries not stored in time")
	}
	return at
}

// TestThreatViewerHistoryScanAmplified: the history op is open to
// viewers and costs one token of the control limit (200/s, bursts of
// 1,000) like whoami. Newest first for one machine, it reads the stream
// back a window of 1,000 sequence numbers at a time, each with a batched
// direct get from the window's start filtered by the machine's subject:
// when the machine has no entry in the window but has entries after it,
// the broker sends the next 1,000 of them anyway, all past the window,
// read and thrown away, for every window, up to 200 windows (200,000
// messages) a request. Here 30,000 entries of other machines lie before
// a flapping machine's 1,000: a viewer's question "what did it do before
// it started flapping" answers nothing and moves 30,000 messages over the
// control service's CONTROL connection, the one its auth callout,
// registry and audit use. One request must cost about what it answers.
func TestThreatViewerHistoryScanAmplified(t *testing.T) {
	svc := startControl(t, "")
	viewer := benchAs(t, svc, newOperator(t, svc, "vera", fleet.RoleViewer))
	kp := svc.Keys().Control
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	const others, flaps = 30000, 1000
	at := time.Now().UTC().Add(-time.Hour)
	at = fillHistory(t, js, "10.0.0.1_quiet", others, at)
	flapStart := at
	fillHistory(t, js, "10.0.0.2_flappy", flaps, at)

	srv := svc.Broker().Server()
	before, err := srv.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var page fleet.HistoryPage
	req := fleet.HistoryRequest{Machine: "10.0.0.2_flappy", Newest: true, Until: flapStart, Limit: 10}
	if err := viewer.Control(ctx, fleet.OpHistory, req, &page); err != nil {
		t.Fatal(err)
	}
	after, err := srv.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	moved := after.OutMsgs - before.OutMsgs
	t.Logf("one viewer history request answered %d entries; the broker delivered %d messages meanwhile", len(page.Entries), moved)
	if len(page.Entries) != 0 {
		t.Fatalf("got %d entries before the machine's first, want 0", len(page.Entries))
	}
	// Everything else running meanwhile (lease renewals, the answer) is
	// a few dozen messages; reading the 30 windows' sequence ranges
	// right is at most one message a window.
	if moved > 5000 {
		t.Fatalf("a viewer's history request that answers nothing made the broker deliver %d messages (%d entries in the stream): "+
			"each window's filtered direct get returns entries beyond the window (bound the get by the window's last sequence, "+
			"e.g. \"up_to_seq\", or charge the request by what it reads)", moved, others+flaps)
	}
}

// TestThreatMachineChurnErasesOthersHistory: the history keeps every
// machine's joins and leaves in one stream bounded by size
// (--history-max-bytes), oldest first out, and nothing bounds how many
// entries one machine makes: a machine that reconnects in a loop (a
// compromised agent, with its own key and nothing else) pushes every
// other machine's entries out — "what went down overnight" then shows
// nothing of the host the attacker took down. Here the history holds
// 512 KiB; machine V leaves once, then machine M connects and closes
// 2,500 times: V's leave must still be in the history (a per-machine
// bound, e.g. MaxMsgsPerSubject on the history's per-machine subjects,
// or a rate of entries per machine).
func TestThreatMachineChurnErasesOthersHistory(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		History: controlsvc.HistoryConfig{MaxBytes: 512 << 10},
		Logger:  stacktest.Logger().With("side", "control"),
	})
	viewer := newOperator(t, svc, "viewer", fleet.RoleViewer)
	const victim, churner = "10.0.0.1_victim", "10.0.0.66_churn"
	v := startAgent(t, svc, victim, true)
	stacktest.WaitOnline(t, svc, victim)
	v.Close()
	stacktest.WaitFor(t, "the victim's leave in the history", 10*time.Second, func() bool {
		return len(historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{Machine: victim}).Entries) == 2
	})
	kp := stacktest.NewKey(t)
	stacktest.RegisterKey(t, svc, churner, stacktest.Pub(t, kp), nil)
	const rounds = 2500
	// Past --max-agent-connections (its closed connections not yet
	// gone from presence) a connection is refused: the agent tries
	// again, as a reconnecting one does.
	for done, refused := 0, 0; done < rounds; {
		nc, err := stacktest.Dial(svc.ClientURL(), kp, churner)
		if err != nil {
			if refused++; refused > 10*rounds {
				t.Fatalf("after %d rounds: %v", done, err)
			}
			continue
		}
		nc.Close()
		done++
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		h := historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{Machine: victim})
		if len(h.Entries) < 2 {
			all := historyOf(t, svc.ClientURL(), viewer, bench.HistoryOptions{Limit: 1})
			t.Fatalf("after machine %s reconnected %d times, machine %s's join and leave are gone from the history "+
				"(%d of its entries left; trimmed %v, oldest entry now %s): one machine's churn erases every other's history",
				churner, rounds, victim, len(h.Entries), h.Trimmed, all.Oldest.Format(time.RFC3339Nano))
		}
		time.Sleep(250 * time.Millisecond) // poll the history until the deadline
	}
}

// TestThreatViewerHistoryFloodDelaysOthers: the history op is served by
// one handler per replica (the control API's micro endpoint), one request
// at a time, and a viewer may send 1,000 at once (--control-burst). With
// requests like TestThreatViewerHistoryScanAmplified's (about 0.1 s each
// here: 493 of 1,000 were answered in a minute) a viewer's burst holds
// the history for minutes: the admin's question "what went down
// overnight" times out behind it. The admin must get an answer within 5
// s (history requests charged by what they read, served per operator in
// turn, or bounded per operator in flight).
func TestThreatViewerHistoryFloodDelaysOthers(t *testing.T) {
	svc := startControl(t, "")
	vpath := newOperator(t, svc, "vera", fleet.RoleViewer)
	admin := adminBench(t, svc)
	kp := svc.Keys().Control
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	at := fillHistory(t, js, "10.0.0.1_quiet", 30000, time.Now().UTC().Add(-time.Hour))
	fillHistory(t, js, "10.0.0.2_flappy", 1000, at)

	vkp := stacktest.LoadKey(t, vpath)
	vpub := stacktest.Pub(t, vkp)
	vc, err := connectAs(svc.ClientURL(), vkp, "vera")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vc.Close)
	req, _ := json.Marshal(fleet.HistoryRequest{Machine: "10.0.0.2_flappy", Newest: true, Until: at, Limit: 10})
	inbox := fleet.ControlInbox(vpub) + ".flood"
	for range 300 {
		if err := vc.PublishRequest(fleet.CtlSubject(vpub, fleet.OpHistory), inbox, req); err != nil {
			t.Fatal(err)
		}
	}
	if err := vc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	var page fleet.HistoryPage
	if err := admin.Control(ctx, fleet.OpHistory, fleet.HistoryRequest{Newest: true, Limit: 10}, &page); err != nil {
		t.Fatalf("the admin's history request during a viewer's burst of 300: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("the admin's history answered in %v", time.Since(start))
}
