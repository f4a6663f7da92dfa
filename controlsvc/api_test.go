package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
)

func TestMapRegistryError(t *testing.T) {
	fe := fleet.Errorf(fleet.CodeForbidden, "no")
	tests := []struct {
		name string
		err  error
		want int // 0: nil
	}{
		{"nil", nil, 0},
		{"fleet error kept", fe, fleet.CodeForbidden},
		{"wrapped fleet error kept", fmt.Errorf("x: %w", fe), fleet.CodeForbidden},
		{"not found", fmt.Errorf("machine x: %w", ErrNotFound), fleet.CodeNotFound},
		{"exists", fmt.Errorf("operator y: %w", ErrExists), fleet.CodeConflict},
		{"validation", invalid(errors.New(`machine id "a b" has ' '`)), fleet.CodeBadRequest},
		{"conflict", fmt.Errorf("pending key differs: %w", ErrConflict), fleet.CodeConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mapRegistryError(tt.err)
			if tt.want == 0 {
				if got != nil {
					t.Fatalf("got %v, want nil", got)
				}
				return
			}
			if c := fleet.CodeOf(got); c != tt.want {
				t.Fatalf("code: got %d, want %d (%v)", c, tt.want, got)
			}
			if !strings.Contains(got.Error(), tt.err.Error()) && !errors.Is(got, tt.err) {
				t.Fatalf("message %q lost the cause %q", got, tt.err)
			}
		})
	}
}

// TestMapRegistryErrorStorageFailure: a failure to write the registry is
// the service's fault, not the caller's.
func TestMapRegistryErrorStorageFailure(t *testing.T) {
	err := fmt.Errorf("write registry.json: %w", fs.ErrPermission)
	if got := fleet.CodeOf(mapRegistryError(err)); got != fleet.CodeInternal {
		t.Fatalf("code: got %d, want %d", got, fleet.CodeInternal)
	}
}

// apiService is a Service with a registry and presence but no network,
// enough for runAPI.
func apiService(t *testing.T) (*Service, string, string) {
	t.Helper()
	reg, err := OpenRegistry(filepath.Join(t.TempDir(), RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	_, admin := newUser(t)
	_, viewer := newUser(t)
	if _, err := reg.AddOperator("alice", admin, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.AddOperator("victor", viewer, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	s := &Service{log: slog.New(slog.DiscardHandler), reg: reg}
	s.presence = &presenceTracker{log: s.log, reg: reg, state: newPresence(reg.Labels, func(fleet.PresenceEvent) {})}
	return s, admin, viewer
}

func TestRunAPI(t *testing.T) {
	s, admin, viewer := apiService(t)
	_, stranger := newUser(t)
	ok := func(context.Context, operatorIdentity, []byte) (any, error) { return "done", nil }
	who := func(_ context.Context, op operatorIdentity, _ []byte) (any, error) {
		return op.Name + "/" + op.Role, nil
	}
	boom := func(context.Context, operatorIdentity, []byte) (any, error) { panic("boom") }
	notFound := func(context.Context, operatorIdentity, []byte) (any, error) {
		return nil, fmt.Errorf("machine x: %w", ErrNotFound)
	}
	tests := []struct {
		name, op, subject string
		body              []byte
		h                 apiHandler
		wantCode          int
		want              string
	}{
		{"admin write", fleet.OpMachinesAdd, fleet.CtlSubject(admin, fleet.OpMachinesAdd), nil, who, 0, "alice/admin"},
		{"viewer read", fleet.OpMachinesList, fleet.CtlSubject(viewer, fleet.OpMachinesList), nil, who, 0, "victor/viewer"},
		{"viewer write refused", fleet.OpMachinesRemove, fleet.CtlSubject(viewer, fleet.OpMachinesRemove), nil, ok, fleet.CodeForbidden, "needs role admin"},
		{"viewer adds operator refused", fleet.OpOperatorsAdd, fleet.CtlSubject(viewer, fleet.OpOperatorsAdd), nil, ok, fleet.CodeForbidden, "victor"},
		{"stranger refused", fleet.OpWhoAmI, fleet.CtlSubject(stranger, fleet.OpWhoAmI), nil, ok, fleet.CodeForbidden, "is not an operator"},
		{"bad subject", fleet.OpWhoAmI, "sys.commandControl.ctl", nil, ok, fleet.CodeBadRequest, "not a control subject"},
		{"too large", fleet.OpMachinesAdd, fleet.CtlSubject(admin, fleet.OpMachinesAdd), make([]byte, 64*1024+1), ok, fleet.CodeTooLarge, "65536"},
		{"panic", fleet.OpMachinesAdd, fleet.CtlSubject(admin, fleet.OpMachinesAdd), nil, boom, fleet.CodeInternal, "internal error"},
		{"registry error mapped", fleet.OpMachinesRemove, fleet.CtlSubject(admin, fleet.OpMachinesRemove), nil, notFound, fleet.CodeNotFound, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.runAPI(context.Background(), tt.op, tt.subject, tt.body, tt.h)
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if res != tt.want {
					t.Fatalf("got %v, want %q", res, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %v, want an error", res)
			}
			if c := fleet.CodeOf(err); c != tt.wantCode {
				t.Fatalf("code: got %d, want %d (%v)", c, tt.wantCode, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestAPIMachinesAddRefusesOperatorKey(t *testing.T) {
	s, admin, _ := apiService(t)
	body, _ := json.Marshal(fleet.MachineRequest{ID: "web01", Key: admin})
	_, err := s.apiMachinesAdd(context.Background(), operatorIdentity{Name: "alice", Role: fleet.RoleAdmin}, body)
	if fleet.CodeOf(err) != fleet.CodeConflict {
		t.Fatalf("got %v, want a 409", err)
	}
	if _, err := s.apiMachinesAdd(context.Background(), operatorIdentity{}, []byte("not json")); fleet.CodeOf(err) != fleet.CodeBadRequest {
		t.Fatalf("bad body: got %v, want a 400", err)
	}
}

// startService starts a real control service with an embedded broker on a
// free loopback port.
func startService(t *testing.T) *Service {
	t.Helper()
	svc, err := New(Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); svc.Close() })
	return svc
}

func TestLastAdminProtection(t *testing.T) {
	svc := startService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, ok := svc.reg.Operator("admin")
	if !ok {
		t.Fatal("no admin operator after first start")
	}
	callerKey := admin.Key
	rm := func(name string) error {
		body, _ := json.Marshal(fleet.OperatorRequest{Name: name})
		_, err := svc.runAPI(ctx, fleet.OpOperatorsRemove, fleet.CtlSubject(callerKey, fleet.OpOperatorsRemove), body, svc.apiOperatorsRemove)
		return err
	}
	_, viewer := newUser(t)
	if _, err := svc.reg.AddOperator("victor", viewer, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	err := rm("admin")
	if fleet.CodeOf(err) != fleet.CodeConflict || !strings.Contains(err.Error(), "last admin") {
		t.Fatalf("removing the last admin: got %v, want 409 last admin", err)
	}
	if _, ok := svc.reg.Operator("admin"); !ok {
		t.Fatal("the last admin was removed")
	}
	if err := rm("nobody"); fleet.CodeOf(err) != fleet.CodeNotFound {
		t.Fatalf("removing an unknown operator: got %v, want 404", err)
	}
	if err := rm("victor"); err != nil {
		t.Fatalf("removing a viewer: %v", err)
	}
	_, second := newUser(t)
	if _, err := svc.reg.AddOperator("root2", second, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := rm("admin"); err != nil {
		t.Fatalf("removing an admin with another left: %v", err)
	}
	callerKey = second
	if err := rm("root2"); fleet.CodeOf(err) != fleet.CodeConflict {
		t.Fatalf("removing the new last admin: got %v, want 409", err)
	}
}

func TestNewCreatesAdminOnce(t *testing.T) {
	dir := t.TempDir()
	start := func() *Service {
		t.Helper()
		s, err := New(Config{DataDir: dir, Broker: broker.Config{Listen: "127.0.0.1:0"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := start()
	if !s1.AdminCreated() {
		t.Fatal("first start did not create the admin")
	}
	fi, err := os.Stat(s1.AdminKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin key mode: got %v, want 0600", fi.Mode().Perm())
	}
	s1.Close()
	s2 := start()
	defer s2.Close()
	if s2.AdminCreated() {
		t.Fatal("second start created the admin again")
	}
	if got := len(s2.Registry().Operators()); got != 1 {
		t.Fatalf("operators: got %d, want 1", got)
	}
}

// TestCloseWithLiveContext: Close must stop the service even when the
// context given to Start has not ended (Start itself calls Close on error
// with a live context).
func TestCloseWithLiveContext(t *testing.T) {
	// Regression: the event watcher's stop func used to wait for a
	// goroutine that only exited on ctx.Done, and the cancel closer ran
	// after it, so Close hung forever.
	svc, err := New(Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { svc.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s")
	}
}
