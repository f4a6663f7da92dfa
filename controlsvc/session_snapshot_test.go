package controlsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// askSessions hands the session snapshot handler a request (as the
// broker delivers one the operator owning inbox sent on its
// ctl.<key>.sessions.snapshot) with reply in inbox, and collects the answer's parts through the
// broker. It returns the parts, or the error header of a refusal.
func askSessions(t *testing.T, s *Service, inbox, body string) ([]fleet.SessionSnapshot, string) {
	t.Helper()
	sub, err := s.fl.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := s.fl.Flush(); err != nil {
		t.Fatal(err)
	}
	owner, _ := fleet.InboxOwner(inbox)
	s.presence.answerSessionSnapshot(s.fl, &nats.Msg{Subject: fleet.CtlSubject(owner, fleet.OpSessionsSnapshot), Reply: inbox, Data: []byte(body)})
	var parts []fleet.SessionSnapshot
	for {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("part %d: %v", len(parts)+1, err)
		}
		if code := m.Header.Get(fleet.HeaderErrorCode); code != "" {
			return nil, code + " " + m.Header.Get(fleet.HeaderError)
		}
		if len(m.Data) > int(s.fl.MaxPayload()) {
			t.Fatalf("part of %d bytes, over the broker's %d", len(m.Data), s.fl.MaxPayload())
		}
		var snap fleet.SessionSnapshot
		if err := json.Unmarshal(m.Data, &snap); err != nil {
			t.Fatalf("part %d is not a session snapshot: %v", len(parts)+1, err)
		}
		parts = append(parts, snap)
		if snap.Parts == 0 || snap.Part == snap.Parts {
			return parts, ""
		}
	}
}

// The session snapshot: 10,000 sessions come in parts, none over the
// broker's payload limit, together listing each once; the query selects
// by city and app server-side, Limit cuts (Total still counts all), a
// bad key is a 400 naming the keys, an operator who may not see sessions
// is refused, and nothing is sent outside an operator's control inbox.
func TestSessionSnapshot(t *testing.T) {
	s, _ := startSessionTestService(t)
	admin, _ := s.reg.Operator("admin")
	_, viewerKey := newUser(t)
	if _, err := s.reg.AddOperator("viewer", viewerKey, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	s.presence.sessions.locate = testLocate
	const n = 10000
	for i := range n {
		app, ip := "demo", fmt.Sprintf("192.0.2.%d", i%250)
		if i%2 == 1 {
			app = "shop"
		}
		if i%5 == 0 {
			ip = fmt.Sprintf("198.51.100.%d", i%250)
		}
		id := fleet.SessionID(app, fmt.Sprintf("UKEY%d", i))
		ss := demoSession(id, app, ip)
		ss.Declared.UserAgent = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
		s.presence.sessions.admitted(ss)
		s.presence.sessions.connected(connKey{"NTEST", uint64(i + 1)}, sessionConnInfo{id: id, ip: ip, tags: []string{"app:" + app}})
	}
	inbox := fleet.ControlInbox(admin.Key) + ".s1"

	parts, refused := askSessions(t, s, inbox, "")
	if refused != "" {
		t.Fatalf("refused: %s", refused)
	}
	if len(parts) < 2 {
		t.Fatalf("%d sessions in %d part(s); want several", n, len(parts))
	}
	seen := map[string]bool{}
	for i, p := range parts {
		if p.Part != i+1 || p.Parts != len(parts) || p.Total != n || p.Seq != n || p.Epoch != s.presence.sessions.epoch || p.Time.IsZero() {
			t.Fatalf("part %d: part %d of %d, total %d, seq %d", i+1, p.Part, p.Parts, p.Total, p.Seq)
		}
		for _, ss := range p.Sessions {
			if seen[ss.ID] {
				t.Fatalf("%s listed twice", ss.ID)
			}
			seen[ss.ID] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("snapshot lists %d sessions, want %d", len(seen), n)
	}

	// Lyon (every fifth) and demo (even): i%10 == 0.
	parts, refused = askSessions(t, s, inbox, `{"where":{"city":"lyon","app":"DEMO"}}`)
	if refused != "" || len(parts) != 1 || parts[0].Total != n/10 || len(parts[0].Sessions) != n/10 {
		t.Fatalf("city+app: refused %q, %d parts, first %+v", refused, len(parts), parts[0].Total)
	}
	for _, ss := range parts[0].Sessions {
		if ss.App != "demo" || ss.Location == nil || ss.Location.City != "Lyon" {
			t.Fatalf("selected %+v", ss)
		}
	}
	parts, _ = askSessions(t, s, inbox, `{"where":{"site":"lyon-office"},"limit":7}`)
	if len(parts) != 1 || parts[0].Total != n/5 || len(parts[0].Sessions) != 7 {
		t.Fatalf("limit 7: %d parts, total %d, %d sessions", len(parts), parts[0].Total, len(parts[0].Sessions))
	}

	for body, want := range map[string]string{
		`{"where":{"colour":"red"}}`: `400 session query: unknown session attribute "colour": use one of app,`,
		`{"where":`:                  "400 session query:",
		`{"limit":-1}`:               "400 session query: limit -1 is negative",
	} {
		if _, refused := askSessions(t, s, inbox, body); !strings.HasPrefix(refused, want) {
			t.Errorf("%s: got %q, want %q…", body, refused, want)
		}
	}
	if _, refused := askSessions(t, s, fleet.ControlInbox(viewerKey)+".s2", ""); !strings.HasPrefix(refused, "403 operator viewer may not see sessions") {
		t.Errorf("viewer without the sessions permission: got %q, want a 403", refused)
	}

	// Not the asker's own control inbox: nothing is sent.
	for _, reply := range []string{fleet.CallReply(admin.Key, "web01", "c", 0), fleet.ControlInbox("UNOBODY") + ".x", "somewhere.else"} {
		sub, err := s.fl.SubscribeSync(reply)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.fl.Flush()
		s.presence.answerSessionSnapshot(s.fl, &nats.Msg{Subject: fleet.CtlSubject(admin.Key, fleet.OpSessionsSnapshot), Reply: reply})
		// The handler publishes before it returns: a flush round trip
		// later anything sent is in.
		_ = s.fl.Flush()
		if n, _, _ := sub.Pending(); n != 0 {
			t.Errorf("answered into %s", reply)
		}
		_ = sub.Unsubscribe()
	}
}

// Parts are cut by bytes: each part's entries fit the limit, every entry
// is in exactly one part, and one entry larger than the limit still goes
// (alone).
func TestSessionSnapshotPartsByBytes(t *testing.T) {
	entries := [][]byte{[]byte(`{"id":"a"}`), []byte(`{"id":"bb"}`), []byte(`{"id":"` + strings.Repeat("c", 40) + `"}`), []byte(`{"id":"d"}`)}
	var got []fleet.SessionSnapshot
	err := publishSessionParts(entries, 9, 3, "ep", time.Unix(0, 0), 25, func(b []byte) error {
		var s fleet.SessionSnapshot
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		got = append(got, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, p := range got {
		if p.Part != i+1 || p.Parts != len(got) || p.Total != 9 || p.Seq != 3 || p.Epoch != "ep" {
			t.Fatalf("part %d: %+v", i+1, p)
		}
		for _, s := range p.Sessions {
			ids = append(ids, s.ID)
		}
	}
	if len(got) != 3 || strings.Join(ids, ",") != "a,bb,"+strings.Repeat("c", 40)+",d" {
		t.Fatalf("%d parts with %v, want 3 with every entry in order", len(got), ids)
	}
	// No sessions: one part, an empty list.
	got = nil
	_ = publishSessionParts(nil, 0, 0, "ep", time.Unix(0, 0), 25, func(b []byte) error {
		var s fleet.SessionSnapshot
		_ = json.Unmarshal(b, &s)
		got = append(got, s)
		return nil
	})
	if len(got) != 1 || got[0].Parts != 0 || len(got[0].Sessions) != 0 {
		t.Fatalf("empty: %+v", got)
	}
}

// Session snapshots an operator asks for draw on a limit of their own
// per operator (the snapshot rate and burst): past the burst,
// 429 until the clock refills it.
func TestSessionSnapshotRateLimit(t *testing.T) {
	clock := newTestClock()
	s, err := New(Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}, SnapshotRate: 1, SnapshotBurst: 2,
		Logger: slog.New(slog.DiscardHandler), Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin, _ := s.reg.Operator("admin")
	inbox := fleet.ControlInbox(admin.Key) + ".r"
	for i := range 2 {
		if _, refused := askSessions(t, s, inbox, ""); refused != "" {
			t.Fatalf("request %d within the burst refused: %s", i+1, refused)
		}
	}
	if _, refused := askSessions(t, s, inbox, ""); !strings.HasPrefix(refused, "429 ") {
		t.Fatalf("past the burst: got %q, want a 429", refused)
	}
	clock.add(time.Second)
	if _, refused := askSessions(t, s, inbox, ""); refused != "" {
		t.Fatalf("a second later: refused %s", refused)
	}
}
