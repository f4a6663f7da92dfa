package controlsvc

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// FuzzOpenRegistry: whatever the registry file holds, OpenRegistry
// returns an error or a registry that lists, saves and reloads the same.
func FuzzOpenRegistry(f *testing.F) {
	_, pub := newUser(f)
	for _, seed := range []string{
		"", "{}", "null", "[]", `{"version":1}`, `{"machines":{"x":null}}`,
		`{"machines":{"10.0.0.1_a":{"id":"10.0.0.1_a","key":"` + pub + `","labels":{"role":"web"}}}}`,
		`{"operators":{"admin":{"name":"admin","key":"` + pub + `","role":"admin"}}}`,
		`{"pending":{"p":{"id":"p","key":"x","attempts":-1}}}`,
		`{"machines":{"bad id":{"id":"bad id","key":"` + pub + `"}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), RegistryFile)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := OpenRegistry(path)
		if err != nil {
			return
		}
		ms, ops, pend := r.Machines(), r.Operators(), r.Pending()
		for _, m := range ms {
			if err := fleet.ValidateMachineID(m.ID); err != nil || !nkeys.IsValidPublicUserKey(m.Key) {
				t.Fatalf("accepted an invalid machine %+v", m)
			}
		}
		r.mu.Lock()
		err = r.saveLocked()
		r.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		r2, err := OpenRegistry(path)
		if err != nil {
			t.Fatalf("a saved registry does not reload: %v", err)
		}
		if !reflect.DeepEqual(ms, r2.Machines()) || !reflect.DeepEqual(ops, r2.Operators()) || len(pend) != len(r2.Pending()) {
			t.Fatal("the registry changed across save and reload")
		}
	})
}

// fuzzCallout is a callout with a registry holding one machine and one
// operator, and the keys to encrypt requests for it.
func fuzzCallout(t testing.TB) (*callout, nkeys.KeyPair, nkeys.KeyPair) {
	reg, err := OpenRegistry(filepath.Join(t.TempDir(), RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	_, mpub := newUser(t)
	_, opub := newUser(t)
	if _, err := reg.AddMachine("10.0.0.5_web01", mpub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.AddOperator("alice", opub, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	issuer, _ := nkeys.CreateAccount()
	xkey, _ := nkeys.CreateCurveKeys()
	server, _ := nkeys.CreateCurveKeys()
	c := &callout{keys: &Keys{Issuer: issuer, XKey: xkey}, reg: reg, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ttl: time.Hour, readOnly: DefaultReadOnlyFunctions}
	return c, xkey, server
}

// FuzzCalloutHandle: an auth callout request of arbitrary bytes, sent in
// clear or encrypted for the service's xkey, never panics the callout.
func FuzzCalloutHandle(f *testing.F) {
	c, xkey, server := fuzzCallout(f)
	_, u := newUser(f)
	req := jwt.NewAuthorizationRequestClaims(u)
	req.UserNkey = u
	req.ConnectOptions = jwt.ConnectOptions{Nkey: u, Name: "10.0.0.5_web01", SignedNonce: "AAAA"}
	req.ClientInformation = jwt.ClientInformation{Nonce: "n"}
	acc, _ := nkeys.CreateAccount()
	tok, _ := req.Encode(acc)
	for _, seed := range []string{"", "x", "a.b.c", tok, tok[:len(tok)/2]} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	xpub, _ := xkey.PublicKey()
	spub, _ := server.PublicKey()
	f.Fuzz(func(t *testing.T, data []byte, encrypt bool) {
		m := nats.NewMsg(AuthCalloutSubject)
		m.Data = data
		if encrypt {
			sealed, err := server.Seal(data, xpub)
			if err != nil {
				t.Skip()
			}
			m.Data = sealed
			m.Header.Set("Nats-Server-Xkey", spub)
		}
		c.handle(m, time.Time{}) // unbound message: the reply is dropped, never sent
	})
}

// FuzzCalloutDecide: whatever a client presents as key, name, nonce and
// signature, the callout grants only a registered key that signed the
// nonce.
func FuzzCalloutDecide(f *testing.F) {
	c, _, _ := fuzzCallout(f)
	kp, pub := newUser(f)
	sig, _ := kp.Sign([]byte("nonce"))
	f.Add(pub, "10.0.0.5_web01", "nonce", base64.RawURLEncoding.EncodeToString(sig))
	f.Add("", "", "", "")
	f.Add("UAAAA", "x", "n", "!!")
	f.Add(pub, "10.0.0.5_web01", "other-nonce", base64.StdEncoding.EncodeToString(sig))
	f.Fuzz(func(t *testing.T, key, name, nonce, sig string) {
		_, u := newUser(t)
		req := jwt.NewAuthorizationRequestClaims(u)
		req.UserNkey = u
		req.ConnectOptions = jwt.ConnectOptions{Nkey: key, Name: name, SignedNonce: sig}
		req.ClientInformation = jwt.ClientInformation{Nonce: nonce, Host: "192.0.2.1"}
		uc, err := c.decide(req)
		if err != nil {
			return
		}
		if verifyNonce(key, nonce, sig) != nil {
			t.Fatalf("granted %q without a valid signature over the nonce", key)
		}
		_, isOp := c.reg.OperatorByKey(key)
		m, isMachine := c.reg.Machine(name)
		if !isOp && !(isMachine && m.Key == key) {
			t.Fatalf("granted key %q name %q that the registry does not know", key, name)
		}
		if uc.Expires == 0 {
			t.Fatal("credentials without expiry")
		}
	})
}

// FuzzControlAPI: any body on any control operation answers a result or
// a coded error; it never panics the service.
func FuzzControlAPI(f *testing.F) {
	reg, err := OpenRegistry(filepath.Join(f.TempDir(), RegistryFile))
	if err != nil {
		f.Fatal(err)
	}
	_, admin := newUser(f)
	if _, err := reg.AddOperator("admin", admin, fleet.RoleAdmin); err != nil {
		f.Fatal(err)
	}
	s := &Service{log: slog.New(slog.DiscardHandler), reg: reg}
	s.presence = &presenceTracker{log: s.log, reg: reg, state: newPresence(reg.Labels, func(fleet.PresenceEvent) {})}
	ops := map[string]apiHandler{
		fleet.OpWhoAmI: s.apiWhoAmI, fleet.OpMachinesList: s.apiMachinesList, fleet.OpMachinesPending: s.apiMachinesPending,
		fleet.OpMachinesAccept: s.apiMachinesAccept, fleet.OpMachinesAdd: s.apiMachinesAdd, fleet.OpMachinesRemove: s.apiMachinesRemove,
		fleet.OpMachinesLabel: s.apiMachinesLabel, fleet.OpOperatorsList: s.apiOperatorsList, fleet.OpOperatorsAdd: s.apiOperatorsAdd,
		fleet.OpOperatorsRemove: s.apiOperatorsRemove, fleet.OpAudit: s.apiAudit,
	}
	names := make([]string, 0, len(ops))
	for n := range ops {
		names = append(names, n)
	}
	_, pub := newUser(f)
	for i := range names {
		for _, b := range []string{"", "{}", "null", `{"id":"10.0.0.1_a","key":"` + pub + `"}`, `{"name":"bob","key":"` + pub + `","role":"viewer"}`,
			`{"id":"10.0.0.1_a","labels":{"k":"v"},"remove":["x"]}`, `{"since":"2020-01-01T00:00:00Z","limit":-1}`, "[", `{"name":"admin"}`} {
			f.Add(uint8(i), []byte(b))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		name := names[int(which)%len(names)]
		_, err := s.runAPI(context.Background(), name, fleet.CtlSubject(admin, name), body, ops[name])
		if err != nil && fleet.CodeOf(err) == fleet.CodeInternal {
			t.Fatalf("%s %q: a 500, not a coded refusal: %v", name, body, err)
		}
	})
}
