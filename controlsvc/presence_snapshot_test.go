package controlsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// startTestService starts a service with an embedded broker on a free
// port, closed when the test ends.
func startTestService(t *testing.T) (*Service, context.Context) {
	t.Helper()
	s, err := New(Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Close() })
	return s, ctx
}

// TestSnapshotPartsAndCache: a snapshot larger than one part comes in
// parts that together list every machine once; the encoded entries are
// reused while nothing changes and renewed when presence or the registry
// (labels) changes. Asked for the ids alone, it lists the same machines
// in as many parts, with no server entries.
func TestSnapshotPartsAndCache(t *testing.T) {
	s, _ := startTestService(t)
	const n = 2*fleet.SnapshotChunk + 500
	id := func(i int) string { return fmt.Sprintf("10.9.%d.%d_m%d", i/250, i%250, i) }
	for i := range n {
		s.presence.state.connected(connKey{server: "NTEST", cid: uint64(i + 1)}, agentUserPrefix+id(i))
	}
	ask := func(ids bool) map[string]fleet.Server {
		t.Helper()
		// The service's own connection may not publish requests; hand
		// the handler one, as an operator's would arrive.
		inbox := fleet.ControlInbox("UTESTOPERATOR") + ".snap"
		sub, err := s.fl.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := s.fl.Flush(); err != nil {
			t.Fatal(err)
		}
		s.presence.sendSnapshot(s.fl, inbox, ids)
		got := map[string]fleet.Server{}
		for part := 1; ; part++ {
			m, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("part %d: %v", part, err)
			}
			var snap fleet.PresenceSnapshot
			if err := json.Unmarshal(m.Data, &snap); err != nil {
				t.Fatalf("part %d is not a snapshot: %v", part, err)
			}
			if snap.Part != part || snap.Parts != 3 || snap.Time.IsZero() || snap.Seq == 0 {
				t.Fatalf("part %d: part %d of %d, time %v, seq %d", part, snap.Part, snap.Parts, snap.Time, snap.Seq)
			}
			list := snap.Servers
			if ids {
				if len(snap.Servers) != 0 || len(snap.Machines) == 0 {
					t.Fatalf("ids part %d: %d servers, %d machines", part, len(snap.Servers), len(snap.Machines))
				}
				list = make([]fleet.Server, len(snap.Machines))
				for i, m := range snap.Machines {
					list[i].Machine = m
				}
			} else if len(snap.Machines) != 0 {
				t.Fatalf("part %d lists %d machine ids besides its servers", part, len(snap.Machines))
			}
			for _, sv := range list {
				if _, dup := got[sv.Machine]; dup {
					t.Fatalf("%s listed twice", sv.Machine)
				}
				got[sv.Machine] = sv
			}
			if part == snap.Parts {
				return got
			}
		}
	}
	got := ask(false)
	if len(got) != n {
		t.Fatalf("snapshot lists %d machines, want %d", len(got), n)
	}
	if ids := ask(true); len(ids) != n {
		t.Fatalf("snapshot of ids lists %d machines, want %d", len(ids), n)
	} else {
		for m := range got {
			if _, ok := ids[m]; !ok {
				t.Fatalf("%s missing from the snapshot of ids", m)
			}
		}
	}
	_, _, first := s.presence.snapshotEntries(false)
	_, _, again := s.presence.snapshotEntries(false)
	if &first[0] != &again[0] {
		t.Error("entries re-encoded although nothing changed")
	}
	// A label (registry) change shows at once.
	_, pub := newUser(t)
	if _, err := s.reg.AddMachine(id(7), pub, map[string]string{"role": "db"}, "test", false); err != nil {
		t.Fatal(err)
	}
	if got := ask(false); got[id(7)].Labels["role"] != "db" {
		t.Errorf("label not in the snapshot: %+v", got[id(7)])
	}
	// So does a machine leaving (presence change).
	s.presence.state.disconnected(connKey{server: "NTEST", cid: 1}, "test")
	for _, ids := range []bool{false, true} {
		if got := ask(ids); len(got) != n-1 {
			t.Errorf("after one left (ids %v): %d machines, want %d", ids, len(got), n-1)
		} else if _, still := got[id(0)]; still {
			t.Errorf("%s still listed after it left (ids %v)", id(0), ids)
		}
	}
}
