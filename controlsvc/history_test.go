package controlsvc

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// openHistoryLog opens a presence history on a real broker with
// JetStream (a temporary store), with a queue of queue events, not
// started.
func openHistoryLog(t *testing.T, nc *nats.Conn, queue int, cfg HistoryConfig) *historyLog {
	t.Helper()
	h := newHistoryLog(nc, slog.New(slog.DiscardHandler), cfg)
	h.queue = make(chan fleet.PresenceEvent, queue)
	if err := h.open(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	return h
}

func historyBroker(t *testing.T) *nats.Conn {
	t.Helper()
	dir := t.TempDir()
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = dir }))
	return brokertest.Connect(t, b, keys.Control)
}

var t0 = time.Date(2030, 5, 1, 22, 0, 0, 0, time.UTC)

// events is a night of a small fleet: web01 and db01 join, db01's host
// goes down at 02:00 (stale connection), web01's agent is stopped at
// 03:00, db01 comes back at 06:00. Ids hold ':', which KV keys refuse.
func nightEvents() []fleet.PresenceEvent {
	web, db := map[string]string{"role": "web"}, map[string]string{"role": "db"}
	return []fleet.PresenceEvent{
		{Event: fleet.EventJoined, Machine: "10.0.0.1_web01", Labels: web, Time: t0},
		{Event: fleet.EventJoined, Machine: "fe80::1_db01", Labels: db, Time: t0.Add(time.Minute)},
		{Event: fleet.EventLeft, Machine: "fe80::1_db01", Labels: db, Time: t0.Add(4 * time.Hour), Reason: "Stale Connection"},
		{Event: fleet.EventLeft, Machine: "10.0.0.1_web01", Labels: web, Time: t0.Add(5 * time.Hour), Reason: "Client Closed"},
		{Event: fleet.EventJoined, Machine: "fe80::1_db01", Labels: db, Time: t0.Add(8 * time.Hour)},
	}
}

func entryText(es []fleet.HistoryEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Time.UTC().Format("15:04")+" "+e.Event+" "+e.Machine+" "+e.Reason)
	}
	return out
}

// TestHistoryQueries: the joins and leaves are stored in order with the
// reasons and the labels of the time, and read back by time range, by
// machine, oldest or newest first, a page at a time; bad requests get an
// error naming what is wrong.
func TestHistoryQueries(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 64, HistoryConfig{})
	for _, ev := range nightEvents() {
		h.record(ev)
	}
	h.start()
	h.close()
	ctx := t.Context()
	all := []string{
		"22:00 joined 10.0.0.1_web01 ", "22:01 joined fe80::1_db01 ", "02:00 left fe80::1_db01 Stale Connection",
		"03:00 left 10.0.0.1_web01 Client Closed", "06:00 joined fe80::1_db01 ",
	}
	p, err := h.query(ctx, fleet.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := entryText(p.Entries); !slices.Equal(got, all) || p.More {
		t.Fatalf("all: got %q more=%v, want %q", got, p.More, all)
	}
	if !p.Oldest.Equal(t0) || p.RetentionSeconds != int64(DefaultHistoryRetention/time.Second) {
		t.Errorf("oldest %v retention %d, want %v and 30 days", p.Oldest, p.RetentionSeconds, t0)
	}
	if p.Entries[2].Labels["role"] != "db" || p.Entries[0].Seq == 0 {
		t.Errorf("entry: %+v", p.Entries[2])
	}
	// What went down overnight: since midnight, until 05:00.
	p, _ = h.query(ctx, fleet.HistoryRequest{Since: t0.Add(2 * time.Hour), Until: t0.Add(7 * time.Hour)})
	if got := entryText(p.Entries); !slices.Equal(got, all[2:4]) {
		t.Errorf("overnight: got %q", got)
	}
	p, _ = h.query(ctx, fleet.HistoryRequest{Machine: "fe80::1_db01"})
	if got := entryText(p.Entries); !slices.Equal(got, []string{all[1], all[2], all[4]}) {
		t.Errorf("db01: got %q", got)
	}
	// Pages of two, oldest first, then newest first.
	var got []string
	req := fleet.HistoryRequest{Limit: 2}
	for range 5 {
		p, err := h.query(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, entryText(p.Entries)...)
		if !p.More {
			break
		}
		req.Cursor = p.Cursor
	}
	if !slices.Equal(got, all) {
		t.Errorf("paged: got %q", got)
	}
	got = nil
	req = fleet.HistoryRequest{Limit: 2, Newest: true}
	for range 5 {
		p, err := h.query(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, entryText(p.Entries)...)
		if !p.More {
			break
		}
		req.Cursor = p.Cursor
	}
	rev := slices.Clone(all)
	slices.Reverse(rev)
	if !slices.Equal(got, rev) {
		t.Errorf("newest first, paged: got %q want %q", got, rev)
	}
	p, _ = h.query(ctx, fleet.HistoryRequest{Newest: true, Machine: "10.0.0.1_web01", Since: t0.Add(time.Hour)})
	if got := entryText(p.Entries); !slices.Equal(got, all[3:4]) {
		t.Errorf("newest of web01 since 23:00: got %q", got)
	}
	for _, bad := range []fleet.HistoryRequest{{Limit: -1}, {Limit: fleet.HistoryMaxLimit + 1}, {Machine: "web 01"},
		{Since: t0, Until: t0}} {
		if _, err := h.query(ctx, bad); fleet.CodeOf(err) != fleet.CodeBadRequest {
			t.Errorf("%+v: got %v, want a 400", bad, err)
		}
	}
}

// TestHistoryLastSeenSurvives: the last-seen records are durable: a new
// history log on the same store (a restarted control service) knows
// every machine's state, since when, and why it left.
func TestHistoryLastSeenSurvives(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 64, HistoryConfig{})
	for _, ev := range nightEvents() {
		h.record(ev)
	}
	h.start()
	h.close()
	h2 := openHistoryLog(t, nc, 64, HistoryConfig{})
	web, ok := h2.seenOf("10.0.0.1_web01")
	if !ok || web.Online || !web.Since.Equal(t0.Add(5*time.Hour)) || !web.LastSeen.Equal(web.Since) || web.Reason != "Client Closed" {
		t.Errorf("web01 after reopening: %+v %v", web, ok)
	}
	db, ok := h2.seenOf("fe80::1_db01")
	if !ok || !db.Online || !db.Since.Equal(t0.Add(8*time.Hour)) || db.Reason != "Stale Connection" {
		t.Errorf("db01 after reopening: %+v %v", db, ok)
	}
	if _, ok := h2.seenOf("10.0.0.9_never"); ok {
		t.Error("a machine never seen has a last-seen record")
	}
}

// TestHistoryQueueFullDrops: past the queue, events are dropped from the
// history (counted), never blocking presence; last-seen in memory stays
// current.
func TestHistoryQueueFullDrops(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 2, HistoryConfig{})
	clock := t0
	h.now = func() time.Time { return clock }
	for _, ev := range nightEvents() {
		h.record(ev) // not started: the queue fills after two
	}
	if n := h.dropped.Load(); n != 3 {
		t.Fatalf("dropped %d, want 3", n)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(historyMetrics(&Service{history: h})...)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 2 || mfs[0].GetName() != "cc_history_events_dropped_total" || mfs[0].GetMetric()[0].GetCounter().GetValue() != 3 {
		t.Errorf("history metrics: %v %v, want cc_history_events_dropped_total 3", mfs, err)
	}
	if s, _ := h.seenOf("fe80::1_db01"); !s.Online || !s.Since.Equal(t0.Add(8*time.Hour)) {
		t.Errorf("in-memory last-seen of db01: %+v", s)
	}
	h.start()
	h.close()
	p, err := h.query(t.Context(), fleet.HistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 2 {
		t.Errorf("stored %d entries, want the 2 queued", len(p.Entries))
	}
}

// TestHistoryRetention: entries older than the retention (the stream's
// MaxAge) are gone.
func TestHistoryRetention(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 64, HistoryConfig{Retention: time.Second})
	h.record(nightEvents()[0])
	h.start()
	h.close()
	p, err := h.query(t.Context(), fleet.HistoryRequest{})
	if err != nil || len(p.Entries) != 1 || p.RetentionSeconds != 1 {
		t.Fatalf("before expiry: %+v %v", p, err)
	}
	waitFor(t, "the entry expired", 10*time.Second, func() bool {
		p, err := h.query(t.Context(), fleet.HistoryRequest{})
		return err == nil && len(p.Entries) == 0 && p.Oldest.IsZero() && p.Trimmed
	})
}

// TestHistoryNotDurable: without JetStream and with NotDurable the
// history keeps last-seen in memory and OpHistory says why it cannot
// answer; without NotDurable the service is told to refuse to start.
func TestHistoryNotDurable(t *testing.T) {
	b, keys := brokertest.Start(t)
	nc := brokertest.Connect(t, b, keys.Control)
	h := newHistoryLog(nc, slog.New(slog.DiscardHandler), HistoryConfig{})
	if err := h.open(t.Context(), false); err == nil {
		t.Fatal("opened with no JetStream and not NotDurable")
	}
	h = newHistoryLog(nc, slog.New(slog.DiscardHandler), HistoryConfig{})
	if err := h.open(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	h.start()
	defer h.close()
	h.record(nightEvents()[0])
	if s, ok := h.seenOf("10.0.0.1_web01"); !ok || !s.Online {
		t.Errorf("in-memory last-seen: %+v", s)
	}
	if _, err := h.query(t.Context(), fleet.HistoryRequest{}); fleet.CodeOf(err) != fleet.CodeUnavailable {
		t.Errorf("query without a store: %v, want 503", err)
	}
}

// TestHistoryStorm: a 10,000-machine reconnect storm (every machine
// leaves and joins again: 20,000 events) is recorded whole, none dropped
// or failed, and recording it never blocks (record returns at once; the
// writer catches up).
func TestHistoryStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 20,000 entries")
	}
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, historyQueue, HistoryConfig{})
	h.start()
	const n = 10000
	start := time.Now()
	for i := range n {
		h.record(fleet.PresenceEvent{Event: fleet.EventLeft, Machine: fmt.Sprintf("10.0.%d.%d_m", i/256, i%256), Time: t0, Reason: "Stale Connection"})
	}
	for i := range n {
		h.record(fleet.PresenceEvent{Event: fleet.EventJoined, Machine: fmt.Sprintf("10.0.%d.%d_m", i/256, i%256), Time: t0.Add(time.Second)})
	}
	queued := time.Since(start)
	h.close()
	t.Logf("20,000 events queued in %v, written in %v", queued, time.Since(start))
	if d, f := h.dropped.Load(), h.failed.Load(); d != 0 || f != 0 {
		t.Fatalf("dropped %d, failed %d; want none", d, f)
	}
	st, err := h.streamState(t.Context())
	if err != nil || st.Msgs != 2*n {
		t.Fatalf("stream holds %d entries (%v), want %d", st.Msgs, err, 2*n)
	}
	kv, err := h.kv.Status(t.Context())
	if err != nil || kv.Values() != n {
		t.Fatalf("last-seen holds %d records (%v), want %d", kv.Values(), err, n)
	}
}

// TestSeenFollowsPresence: the history hook sits on presence's event
// path (publishEvent), and machines.list's seen comes from it and from
// presence, by the service's clock: a machine never seen has none; an
// ONLINE one is ONLINE since it joined and last seen now; one that left
// is OFFLINE since then, with the broker's reason, kept when it joins
// again.
func TestSeenFollowsPresence(t *testing.T) {
	clock := t0
	now := func() time.Time { return clock }
	h := newHistoryLog(nil, slog.New(slog.DiscardHandler), HistoryConfig{}) // memory only
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), now: now}
	tr.state = newPresence(func(string) map[string]string { return nil }, tr.publishEvent)
	tr.state.now = now
	tr.onEvent = h.record
	tr.leading.Store(true) // the one replica: the presence publisher
	s := &Service{presence: tr, history: h}
	const id = "10.0.0.1_web01"
	if got := s.seenOf(id, time.Time{}); got != nil {
		t.Fatalf("never seen: %+v", got)
	}
	k := connKey{"S1", 7}
	tr.state.connected(k, agentUserPrefix+id)
	clock = t0.Add(5 * time.Minute)
	if got := s.seenOf(id, time.Time{}); got == nil || !got.Online || !got.Since.Equal(t0) || !got.LastSeen.Equal(clock) {
		t.Fatalf("ONLINE: %+v", got)
	}
	clock = t0.Add(time.Hour)
	tr.state.disconnected(k, "Stale Connection")
	clock = t0.Add(90 * time.Minute)
	want := fleet.Seen{Since: t0.Add(time.Hour), LastSeen: t0.Add(time.Hour), Reason: "Stale Connection"}
	if got := s.seenOf(id, time.Time{}); got == nil || *got != want {
		t.Fatalf("left: %+v, want %+v", got, want)
	}
	clock = t0.Add(2 * time.Hour)
	tr.state.connected(connKey{"S1", 8}, agentUserPrefix+id)
	if got := s.seenOf(id, time.Time{}); got == nil || !got.Online || !got.Since.Equal(clock) || got.Reason != "Stale Connection" {
		t.Fatalf("back: %+v", got)
	}
	// The service restarts (the same records, a new presence that finds
	// the machine connected, and emits nothing for it): ONLINE since it
	// joined, not since the restart.
	joined := clock
	clock = t0.Add(3 * time.Hour)
	tr2 := &presenceTracker{log: slog.New(slog.DiscardHandler), now: now}
	tr2.state = newPresence(func(string) map[string]string { return nil }, tr2.publishEvent)
	tr2.state.now = now
	tr2.state.restore(presenceState{Online: []string{id}})
	tr2.onEvent = h.record
	tr2.leading.Store(true)
	tr2.state.connected(connKey{"S2", 1}, agentUserPrefix+id)
	s2 := &Service{presence: tr2, history: h}
	if got := s2.seenOf(id, time.Time{}); got == nil || !got.Online || !got.Since.Equal(joined) {
		t.Fatalf("ONLINE across a restart: %+v, want since %v", got, joined)
	}
}

// TestHistoryReplicas: 3 replicas are asked for first; a broker that
// cannot place them (not clustered, too few servers) gets 1, anything
// else is an error. On a single broker the stream and bucket are R1.
func TestHistoryReplicas(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 1, HistoryConfig{})
	s, err := h.js.Stream(t.Context(), HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := h.kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 1 || kv.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 1 {
		t.Errorf("replicas on a single broker: stream %d, bucket %d; want 1", r, kv.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas)
	}
}

// TestHistoryNewestFirstReadsWhatItAnswers: one machine's entries,
// newest first, among thousands of other machines' entries: every entry
// is found (a page at a time too), and a page reads about what it
// answers, not the other machines' entries nor the machine's own past
// each window (a filtered batched read does not stop at a window's end).
func TestHistoryNewestFirstReadsWhatItAnswers(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 8192, HistoryConfig{})
	const id = "10.0.0.2_flappy"
	at := t0
	var mine []string
	others := 0
	add := func(machine string, n int) {
		for range n {
			m := machine
			if m != id {
				// Many machines: one machine's entries are bounded.
				m = fmt.Sprintf("10.1.%d.%d_quiet", others/250, others%250)
				others++
			}
			ev := fleet.PresenceEvent{Event: fleet.EventJoined, Machine: m, Time: at}
			h.record(ev)
			if machine == id {
				mine = append(mine, entryText([]fleet.HistoryEntry{{Event: ev.Event, Machine: id, Time: at}})[0])
			}
			at = at.Add(time.Second)
		}
	}
	// Its entries: one alone, then after 3,000 others, 2 close together,
	// 2,500 others, 1 more, and 1,200 others last.
	add(id, 1)
	add("10.0.0.1_quiet", 3000)
	add(id, 2)
	add("10.0.0.1_quiet", 2500)
	add(id, 1)
	before := at
	add("10.0.0.1_quiet", 1200)
	h.start()
	h.close()
	ctx := t.Context()
	rev := slices.Clone(mine)
	slices.Reverse(rev)

	p, read, err := h.queryRead(ctx, fleet.HistoryRequest{Machine: id, Newest: true, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got := entryText(p.Entries); !slices.Equal(got, rev) || p.More {
		t.Fatalf("newest first: got %q more=%v, want %q", got, p.More, rev)
	}
	t.Logf("4 entries among 6,700: read %d messages", read)
	if read > 100 {
		t.Errorf("4 entries among 6,700 read %d messages, want under 100", read)
	}
	// Before its first entry: nothing, at once.
	p, read, err = h.queryRead(ctx, fleet.HistoryRequest{Machine: id, Newest: true, Until: t0})
	if err != nil || len(p.Entries) != 0 || read > 100 {
		t.Errorf("before its first entry: %d entries, %v, read %d", len(p.Entries), err, read)
	}
	// A page at a time.
	var got []string
	req := fleet.HistoryRequest{Machine: id, Newest: true, Limit: 1}
	for range 10 {
		p, err := h.query(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, entryText(p.Entries)...)
		if !p.More {
			break
		}
		req.Cursor = p.Cursor
	}
	if !slices.Equal(got, rev) {
		t.Errorf("a page at a time: got %q, want %q", got, rev)
	}
	// Everyone's, newest first, across a window's edge.
	p, read, err = h.queryRead(ctx, fleet.HistoryRequest{Newest: true, Until: before, Limit: 1500})
	if err != nil || len(p.Entries) != 1500 || entryText(p.Entries[:1])[0] != rev[0] {
		t.Fatalf("everyone's until %v: %d entries, first %q, %v", before, len(p.Entries), entryText(p.Entries[:1]), err)
	}
	for i := 1; i < len(p.Entries); i++ {
		if p.Entries[i].Seq >= p.Entries[i-1].Seq {
			t.Fatalf("entry %d (seq %d) after seq %d: not newest first", i, p.Entries[i].Seq, p.Entries[i-1].Seq)
		}
	}
	if read > 1600+100 {
		t.Errorf("1,500 entries read %d messages", read)
	}
}

// TestHistoryPerMachineBound: a machine that joins and leaves in a loop
// keeps only its last PerMachine joins and leaves, and never pushes
// another machine's out; asked for it, the page says its older are gone.
func TestHistoryPerMachineBound(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 1024, HistoryConfig{MaxBytes: 1 << 20, PerMachine: 8})
	const victim, churner = "10.0.0.1_victim", "10.0.0.66_churn"
	at := t0
	h.record(fleet.PresenceEvent{Event: fleet.EventJoined, Machine: victim, Time: at})
	h.record(fleet.PresenceEvent{Event: fleet.EventLeft, Machine: victim, Time: at.Add(time.Second), Reason: "Stale Connection"})
	for i := range 100 {
		at = t0.Add(time.Duration(i+2) * time.Minute)
		h.record(fleet.PresenceEvent{Event: fleet.EventJoined, Machine: churner, Time: at})
		h.record(fleet.PresenceEvent{Event: fleet.EventLeft, Machine: churner, Time: at.Add(time.Second), Reason: "Client Closed"})
	}
	h.start()
	h.close()
	ctx := t.Context()
	p, err := h.query(ctx, fleet.HistoryRequest{Machine: victim})
	if err != nil || len(p.Entries) != 2 || p.MachineTrimmed || p.PerMachine != 8 {
		t.Fatalf("the victim after 100 rounds of another: %q trimmed %v per machine %d, %v", entryText(p.Entries), p.MachineTrimmed, p.PerMachine, err)
	}
	p, err = h.query(ctx, fleet.HistoryRequest{Machine: churner, Newest: true})
	if err != nil || len(p.Entries) != 16 || !p.MachineTrimmed {
		t.Fatalf("the churner: %d entries trimmed %v, %v; want its last 8 joins and 8 leaves, trimmed", len(p.Entries), p.MachineTrimmed, err)
	}
	if !p.Entries[0].Time.Equal(at.Add(time.Second)) {
		t.Errorf("the churner's newest: %v, want %v", p.Entries[0].Time, at.Add(time.Second))
	}
	p, err = h.query(ctx, fleet.HistoryRequest{})
	if err != nil || len(p.Entries) != 18 || p.Entries[0].Machine != victim {
		t.Fatalf("everyone's: %d entries, first %+v, %v; want the victim's 2 first and the churner's last 16", len(p.Entries), p.Entries[0], err)
	}
}

// TestHistoryForget: a machine removed from the registry is forgotten:
// its last-seen record goes from memory, from the bucket (after the
// events queued before it), and from another replica's memory; its
// history entries stay. A record from before a machine was (re)added is
// not shown as its own.
func TestHistoryForget(t *testing.T) {
	nc := historyBroker(t)
	h := openHistoryLog(t, nc, 64, HistoryConfig{})
	other := openHistoryLog(t, nc, 64, HistoryConfig{}) // another replica, following the bucket
	h.start()
	const id = "fe80::1_db01"
	for _, ev := range nightEvents() {
		h.record(ev)
	}
	h.record(fleet.PresenceEvent{Event: fleet.EventLeft, Machine: id, Time: t0.Add(9 * time.Hour), Reason: "removed from the registry"})
	waitFor(t, "the other replica knows db01", 10*time.Second, func() bool {
		s, ok := other.seenOf(id)
		return ok && !s.Online
	})
	h.forget(id)
	if _, ok := h.seenOf(id); ok {
		t.Fatal("still remembered after forget")
	}
	waitFor(t, "the other replica forgot db01", 10*time.Second, func() bool {
		_, ok := other.seenOf(id)
		return !ok
	})
	h.close()
	if _, err := h.kv.Get(t.Context(), lastSeenKey(id)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("db01's record in the bucket after forget: %v, want none", err)
	}
	if _, ok := openHistoryLog(t, nc, 64, HistoryConfig{}).seenOf("10.0.0.1_web01"); !ok {
		t.Error("web01 forgotten too")
	}
	p, err := h.query(t.Context(), fleet.HistoryRequest{Machine: id})
	if err != nil || len(p.Entries) != 4 {
		t.Errorf("db01's history after forget: %d entries, %v; want its 4", len(p.Entries), err)
	}
	// A record older than the machine's registration is an earlier
	// machine's with that id.
	s := &Service{presence: &presenceTracker{state: newPresence(func(string) map[string]string { return nil }, nil)}, history: other}
	if got := s.seenOf("10.0.0.1_web01", t0.Add(6*time.Hour)); got != nil {
		t.Errorf("a record from before the machine was added: %+v, want none", got)
	}
	if got := s.seenOf("10.0.0.1_web01", t0); got == nil || got.Reason != "Client Closed" {
		t.Errorf("a record from after the machine was added: %+v", got)
	}
}

// TestHistoryLastSeenWatchRestarts: a replica following the last-seen
// bucket starts its watch again when it stalls (here: its consumer
// deleted on the broker, as when the broker it was on dies; the client
// alone notices after missed heartbeats, some 15 s) and after its
// connection reconnects, and goes on applying the records others write.
func TestHistoryLastSeenWatchRestarts(t *testing.T) {
	dir := t.TempDir()
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = dir }))
	writer := openHistoryLog(t, brokertest.Connect(t, b, keys.Control), 64, HistoryConfig{})
	writer.start()
	nc := brokertest.Connect(t, b, keys.Control)
	reader := newHistoryLog(nc, slog.New(slog.DiscardHandler), HistoryConfig{})
	reader.watchCheck = 20 * time.Millisecond
	if err := reader.open(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reader.close)
	seenAt := func(id string, at time.Time) func() bool {
		return func() bool {
			s, ok := reader.seenOf(id)
			return ok && s.Since.Equal(at)
		}
	}
	writer.record(fleet.PresenceEvent{Event: fleet.EventJoined, Machine: "10.0.0.1_web01", Time: t0})
	waitFor(t, "the first record followed", 5*time.Second, seenAt("10.0.0.1_web01", t0))

	st, err := writer.js.Stream(t.Context(), "KV_"+LastSeenBucket)
	if err != nil {
		t.Fatal(err)
	}
	for name := range st.ConsumerNames(t.Context()).Name() {
		if err := st.DeleteConsumer(t.Context(), name); err != nil {
			t.Fatal(err)
		}
	}
	writer.record(fleet.PresenceEvent{Event: fleet.EventLeft, Machine: "10.0.0.1_web01", Time: t0.Add(time.Hour)})
	waitFor(t, "a record written after the watch's consumer was deleted", 5*time.Second, seenAt("10.0.0.1_web01", t0.Add(time.Hour)))

	before := reader.follower.restarts.Load()
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watch started again after the reconnect", 5*time.Second, func() bool {
		return reader.follower.restarts.Load() > before
	})
	writer.record(fleet.PresenceEvent{Event: fleet.EventJoined, Machine: "10.0.0.2_db01", Time: t0.Add(2 * time.Hour)})
	waitFor(t, "a record written after the reconnect", 5*time.Second, seenAt("10.0.0.2_db01", t0.Add(2*time.Hour)))
}
