package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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

// auditStreams opens the control service's own CONTROL account (where the
// audit streams are) for inspection.
func auditStreams(t *testing.T, svc *controlsvc.Service) jetstream.JetStream {
	t.Helper()
	kp := svc.Keys().Control
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func streamState(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamState {
	t.Helper()
	st, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return info.State
}

// floodCalls registers viewer name and has it call fn on a machine that
// is not ONLINE n times with arguments body, each call with a reply
// subject of its own (the call watcher records each at once), as fast as
// it can publish.
func floodCalls(t *testing.T, svc *controlsvc.Service, name, fn string, body []byte, n int) {
	t.Helper()
	kp, pub := newPub(t)
	if _, err := svc.Registry().AddOperator(name, pub, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	nc, err := connectAs(svc.ClientURL(), kp, name)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := range n {
		reply := fleet.CallReply(pub, fleet.MachineToken("10.9.9.9_gone"), fmt.Sprintf("flood%d", i), 0)
		if err := nc.PublishRequest(fleet.FnSubject("10.9.9.9_gone", fn, pub), reply, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.LastError(); err != nil {
		t.Fatal(err)
	}
}

// TestAuditCallFloodKeepsChanges (issue 10 finding 5): a viewer's flood of
// read-only calls with large arguments evicts only older call records:
// the admin's operators.add, in the changes log, stays; each call record
// is bounded (arguments cut to fleet.AuditMaxCallArgs with the whole's
// size and SHA-256) and the calls log stays within its size.
func TestAuditCallFloodKeepsChanges(t *testing.T) {
	const callsMax = 48 << 10
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Logger: stacktest.Logger(),
		Broker: broker.Config{Listen: "127.0.0.1:0"},
		Audit:  controlsvc.AuditConfig{Calls: controlsvc.AuditLimits{MaxBytes: callsMax}, Changes: controlsvc.AuditLimits{MaxBytes: callsMax}}})
	admin, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := t.Context()
	if _, err := admin.AddOperator(ctx, "mallory-check", freshPub(t), fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	fn := controlsvc.DefaultReadOnlyFunctions[0]
	body := []byte(`{"what":"` + strings.Repeat("x", 4000) + `"}`)
	sum := sha256.Sum256(body)
	// 4,000-byte arguments: ~4.7 KB per record before, ~1.3 KB now; 200
	// of them are 5 times the calls log.
	const n = 200
	floodCalls(t, svc, "viewer1", fn, body, n)

	js := auditStreams(t, svc)
	stacktest.WaitFor(t, "every call recorded", 10*time.Second, func() bool {
		return streamState(t, js, controlsvc.AuditCallsStream).LastSeq >= n
	})
	calls := streamState(t, js, controlsvc.AuditCallsStream)
	if calls.FirstSeq <= 1 || calls.Bytes > callsMax {
		t.Fatalf("calls log: first seq %d, %d bytes; want older calls evicted and at most %d bytes", calls.FirstSeq, calls.Bytes, callsMax)
	}
	recs, err := admin.Audit(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var added bool
	var nCalls int
	for _, r := range recs {
		switch r.Kind {
		case fleet.AuditRegistry:
			added = added || (r.Op == fleet.OpOperatorsAdd && r.Operator == "admin" && r.Log == fleet.AuditLogChanges)
		case fleet.AuditCall:
			nCalls++
			if r.Operator != "viewer1" || r.Cut == nil || r.Cut.Size != len(body) || r.Cut.SHA256 != hex.EncodeToString(sum[:]) ||
				len(r.Args) > fleet.AuditMaxCallArgs+64 || r.Log != fleet.AuditLogCalls {
				t.Fatalf("call record not bounded with its size and hash: %s %d args bytes, cut %+v", r.Operator, len(r.Args), r.Cut)
			}
		}
	}
	if !added {
		t.Fatalf("the admin's operators.add was evicted by the viewer's %d calls", n)
	}
	if nCalls == 0 || nCalls >= n {
		t.Fatalf("%d call records read back, want some (the newest) of %d", nCalls, n)
	}
	// The changes log alone.
	changes, err := admin.Audit(ctx, time.Time{}, 0, fleet.AuditLogChanges)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range changes {
		if r.Kind == fleet.AuditCall {
			t.Fatalf("a call in the changes log: %+v", r)
		}
	}
	if len(changes) == 0 {
		t.Fatal("the changes log reads empty")
	}
	var l fleet.AuditList
	if err := admin.Control(ctx, fleet.OpAudit, fleet.AuditRequest{Logs: []string{"bogus"}}, &l); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("an unknown log: got %v, want an error naming it", err)
	}
}

// TestAuditReadsLeaveNoConsumers (issue 10 finding 10): paging through
// the audit 1,100 times (more than JetStream's 1,000-consumer limit, which
// reads hit before when each page left an ordered consumer for 5 minutes)
// leaves no consumer on any audit stream.
func TestAuditReadsLeaveNoConsumers(t *testing.T) {
	svc := startControl(t, "")
	admin, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := t.Context()
	floodCalls(t, svc, "viewer1", controlsvc.DefaultReadOnlyFunctions[0], nil, 20)
	if _, err := admin.AddOperator(ctx, "v2", freshPub(t), fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "calls recorded", 10*time.Second, func() bool {
		recs, err := admin.Audit(ctx, time.Time{}, 0)
		return err == nil && len(recs) >= 21
	})
	pages, fulls := 0, 0
	req := fleet.AuditRequest{Limit: 4}
	for pages < 1100 {
		var l fleet.AuditList
		if err := admin.Control(ctx, fleet.OpAudit, req, &l); err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		if len(l.Records) == 0 {
			t.Fatalf("page %d: empty", pages)
		}
		req.After = l.Next
		if !l.More {
			req.After = nil
			fulls++
		}
	}
	js := auditStreams(t, svc)
	for _, s := range []string{controlsvc.AuditStream, controlsvc.AuditRefusedStream, controlsvc.AuditCallsStream} {
		if n := streamState(t, js, s).Consumers; n != 0 {
			t.Errorf("stream %s: %d consumers left after %d page reads (%d full reads)", s, n, pages, fulls)
		}
	}
	if fulls < 100 {
		t.Fatalf("only %d full reads in %d pages", fulls, pages)
	}
}

// TestAuditStoreTooSmall (issue 10 finding 9): when the audit streams do
// not fit in the JetStream store, the control service refuses to start
// and says how much is needed, how much is free and where; with
// NotDurable (--no-durable-audit) it starts, and reading the audit says it
// is not durable and why.
func TestAuditStoreTooSmall(t *testing.T) {
	data := t.TempDir()
	huge := controlsvc.AuditLimits{MaxBytes: 1 << 50} // 1 PiB
	svc, err := controlsvc.New(controlsvc.Config{DataDir: data, Logger: stacktest.Logger(),
		Broker: broker.Config{Listen: "127.0.0.1:0"}, Audit: controlsvc.AuditConfig{Calls: huge}})
	if err != nil {
		t.Fatal(err)
	}
	err = svc.Start(t.Context())
	svc.Close()
	if !errors.Is(err, controlsvc.ErrAuditNotDurable) {
		t.Fatalf("start with a 1 PiB calls log: got %v, want ErrAuditNotDurable", err)
	}
	msg := err.Error()
	for _, want := range []string{"1.0 PiB (--audit-calls-max-bytes)", "free on its volume", filepath.Join(data, "jetstream"),
		"JetStream may reserve", "--no-durable-audit", AuditCallsStreamName} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal lacks %q:\n%s", want, msg)
		}
	}
	t.Logf("refusal: %s", msg)

	svc = stacktest.StartControlWith(t, controlsvc.Config{DataDir: data, Logger: stacktest.Logger(),
		Broker: broker.Config{Listen: "127.0.0.1:0"}, Audit: controlsvc.AuditConfig{Calls: huge, NotDurable: true}})
	admin, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	_, err = admin.Audit(t.Context(), time.Time{}, 0)
	if err == nil || !strings.Contains(err.Error(), "not durable") || !strings.Contains(err.Error(), "1.0 PiB") {
		t.Fatalf("audit read without a durable audit: got %v, want 503 saying it is not durable and why", err)
	}
	var fe *fleet.Error
	if !errors.As(err, &fe) || fe.Code != fleet.CodeUnavailable {
		t.Fatalf("audit read: got %v, want code %d", err, fleet.CodeUnavailable)
	}
}

const AuditCallsStreamName = controlsvc.AuditCallsStream

// freshPub is a fresh user public key.
func freshPub(t *testing.T) string {
	_, pub := newPub(t)
	return pub
}
