package e2e

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func isAuthErr(err error) bool {
	return err != nil && (errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization"))
}

func TestUnregisteredKeyRefused(t *testing.T) {
	svc := startControl(t, "")
	kp, _ := nkeys.CreateUser()
	_, err := connectAs(svc.ClientURL(), kp, "10.9.9.9_intruder")
	if !isAuthErr(err) {
		t.Fatalf("unregistered machine: got %v, want an authorization violation", err)
	}
	p := svc.Registry().Pending()
	if len(p) != 1 || p[0].ID != "10.9.9.9_intruder" || p[0].Reason != "not in the registry" {
		t.Fatalf("pending: got %+v", p)
	}
}

func TestRegisteredIDWithAnotherKeyRefused(t *testing.T) {
	svc := startControl(t, "")
	owner, _ := nkeys.CreateUser()
	pub, _ := owner.PublicKey()
	if _, err := svc.Registry().AddMachine("10.0.0.1_web01", pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	thief, _ := nkeys.CreateUser()
	if _, err := connectAs(svc.ClientURL(), thief, "10.0.0.1_web01"); !isAuthErr(err) {
		t.Fatalf("someone else's key: got %v, want an authorization violation", err)
	}
	// The owner's own key still works.
	nc, err := connectAs(svc.ClientURL(), owner, "10.0.0.1_web01")
	if err != nil {
		t.Fatalf("owner refused: %v", err)
	}
	nc.Close()
}

func TestForgedSignatureRefused(t *testing.T) {
	svc := startControl(t, "")
	owner, _ := nkeys.CreateUser()
	pub, _ := owner.PublicKey()
	if _, err := svc.Registry().AddMachine("10.0.0.1_web01", pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	// Presents the registered public key but signs the nonce with another key.
	other, _ := nkeys.CreateUser()
	_, err := nats.Connect(svc.ClientURL(), nats.Name("10.0.0.1_web01"), nats.Nkey(pub, other.Sign))
	if !isAuthErr(err) {
		t.Fatalf("forged signature: got %v, want an authorization violation", err)
	}
}

// permErrors connects with an error handler that records permission
// violations.
func permConn(t *testing.T, url string, kp nkeys.KeyPair, name string) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := connectAs(url, kp, name, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

func expectViolation(t *testing.T, errs chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("%s: got %v, want a permissions violation", what, err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("%s: no permissions violation reported", what)
	}
}

func TestAgentConfinedToItsOwnSubjects(t *testing.T) {
	svc := startControl(t, "")
	victim := startAgent(t, svc, "10.0.0.2_web02", true, echoFn())
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	if _, err := svc.Registry().AddMachine("10.0.0.1_web01", pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	nc, errs := permConn(t, svc.ClientURL(), kp, "10.0.0.1_web01")

	// Listening to another agent's calls is refused.
	if _, err := nc.SubscribeSync(fleet.FnRoot + "." + fleet.MachineToken(victim.MachineID()) + ".>"); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "subscribe to another agent's subjects")
	// So is a wildcard over every agent.
	if _, err := nc.SubscribeSync(fleet.DirectCallsWildcard); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "subscribe to every agent's subjects")
	// Calling another agent is refused.
	if err := nc.PublishRequest(fleet.FnSubject(victim.MachineID(), "echo", pub), "x", nil); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "call another agent")
	// Presence and the control API are not for agents.
	if _, err := nc.SubscribeSync(fleet.PresenceEventsWildcard); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "agent watching presence")
	// Its own subjects are fine.
	if _, err := nc.SubscribeSync(fleet.MachineCallsWildcard(fleet.MachineToken("10.0.0.1_web01"))); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatalf("own subjects refused: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestViewerLimits(t *testing.T) {
	svc := startControl(t, "")
	startAgent(t, svc, "10.0.0.2_web02", true, echoFn())
	viewerSeed := newOperator(t, svc, "alice", "viewer")
	viewer := operatorConn(t, svc.ClientURL(), viewerSeed)

	var who fleet.WhoAmI
	ctl(t, viewer, fleet.OpWhoAmI, nil, &who)
	if who.Operator != "alice" || who.Role != "viewer" {
		t.Fatalf("whoami: got %+v", who)
	}
	var list fleet.MachineList
	ctl(t, viewer, fleet.OpMachinesList, nil, &list)
	if len(list.Machines) != 1 {
		t.Fatalf("viewer machines.list: got %d machines, want 1", len(list.Machines))
	}
	// Managing the registry is admin-only.
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	err := ctlErr(viewer, fleet.OpMachinesAdd, fleet.MachineRequest{ID: "10.0.0.9_x", Key: pub}, nil)
	var fe *fleet.Error
	if !errors.As(err, &fe) || fe.Code != fleet.CodeForbidden {
		t.Fatalf("viewer machines.add: got %v, want a 403", err)
	}
	if _, ok := svc.Registry().Machine("10.0.0.9_x"); ok {
		t.Fatal("viewer's add went through")
	}
	err = ctlErr(viewer, fleet.OpOperatorsAdd, fleet.OperatorRequest{Name: "mallory", Key: pub, Role: "admin"}, nil)
	if !errors.As(err, &fe) || fe.Code != fleet.CodeForbidden {
		t.Fatalf("viewer operators.add: got %v, want a 403", err)
	}
	// A function outside the read-only list cannot even be published.
	_, err = stacktest.Request(viewer, "10.0.0.2_web02", "echo", nil, time.Second)
	if err == nil {
		t.Fatal("viewer called a function outside the read-only list")
	}
}

func TestOperatorCannotReadAnothersReplies(t *testing.T) {
	svc := startControl(t, "")
	admin := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	seed := newOperator(t, svc, "bob", "viewer")
	b, _ := nkeys.FromSeed(mustRead(t, seed))
	nc, errs := permConn(t, svc.ClientURL(), b, "bob")
	if _, err := nc.SubscribeSync(fleet.OperatorInboxWildcard(admin.Opts.Nkey)); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "subscribe to the admin's inbox")
	if _, err := nc.SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "subscribe to the default inbox space")
	// Using the control API under the admin's key is refused by the broker.
	bpub, _ := b.PublicKey()
	if err := nc.PublishRequest(fleet.CtlSubject(admin.Opts.Nkey, fleet.OpMachinesList), fleet.OperatorInbox(bpub)+".x", nil); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "control API under another operator's key")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.TrimSpace(string(b)))
}
