package controlsvc

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// BenchmarkCalloutAuthorise is the control service's share of one
// connection's authorisation, as in production: decrypt the broker's
// request, verify its JWT and the client's nonce signature, look the
// machine up, issue and sign the user JWT and the response, encrypt it.
func BenchmarkCalloutAuthorise(b *testing.B) {
	f := newCalloutFixture(&testing.T{})
	xk, _ := nkeys.CreateCurveKeys()
	f.c.keys.XKey = xk
	xpub, _ := xk.PublicKey()
	server, _ := nkeys.CreateServer()
	serverX, _ := nkeys.CreateCurveKeys()
	serverXPub, _ := serverX.PublicKey()
	web := f.webKP
	webPub, _ := web.PublicKey()
	const nonce = "bench-nonce-0123456789"
	sig, _ := web.Sign([]byte(nonce))
	// A pool of distinct requests, as the broker would send them.
	reqs := make([][]byte, 256)
	for i := range reqs {
		_, userNkey := newUser(b)
		rc := jwt.NewAuthorizationRequestClaims(userNkey)
		rc.UserNkey = userNkey
		rc.Server = jwt.ServerID{Name: "bench", ID: "NBENCH"}
		rc.ConnectOptions = jwt.ConnectOptions{Nkey: webPub, SignedNonce: base64.RawURLEncoding.EncodeToString(sig), Name: "10.0.0.5_web01"}
		rc.ClientInformation = jwt.ClientInformation{Nonce: nonce, Host: "127.0.0.1"}
		tok, err := rc.Encode(server)
		if err != nil {
			b.Fatal(err)
		}
		if reqs[i], err = serverX.Seal([]byte(tok), xpub); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		out, err := f.c.authorize(reqs[i%len(reqs)], serverXPub)
		if err != nil || len(out) == 0 {
			b.Fatal(err)
		}
	}
}

// BenchmarkCalloutRefusedPerAddress is the control service's cost of one
// attempt refused by the per-address limit (a flood from one address over
// WebSocket: made-up machine ids, or session hellos), as in production:
// decrypt, decode, the limiter's lookup, then sign and encrypt the
// refusal. "decide" is the decision alone (what precedes the answer);
// "shared-worker" is what the workers shared with agents and operators
// spend on it (decrypt and decode) before the sessions' workers take it.
func BenchmarkCalloutRefusedPerAddress(b *testing.B) {
	f := newCalloutFixture(&testing.T{})
	f.c.onRefuse = func(kind, who, ip, reason string) {} // production counts it
	f.c.sessions.perIP = newIPLimiter(0, 1, maxSessionIPs, f.c.now)
	f.c.sessions.perIP.allow("192.0.2.66") // the address's burst is spent
	xk, _ := nkeys.CreateCurveKeys()
	f.c.keys.XKey = xk
	xpub, _ := xk.PublicKey()
	server, _ := nkeys.CreateServer()
	serverX, _ := nkeys.CreateCurveKeys()
	serverXPub, _ := serverX.PublicKey()
	const nonce = "bench-nonce-0123456789"
	for _, kind := range []string{"websocket-machine", "session"} {
		reqs := make([]*jwt.AuthorizationRequestClaims, 256)
		sealed := make([][]byte, len(reqs))
		for i := range reqs {
			kp, pub := newUser(b)
			sig, _ := kp.Sign([]byte(nonce))
			_, userNkey := newUser(b)
			rc := jwt.NewAuthorizationRequestClaims(userNkey)
			rc.UserNkey = userNkey
			rc.Server = jwt.ServerID{Name: "bench", ID: "NBENCH"}
			rc.ConnectOptions = jwt.ConnectOptions{Nkey: pub, SignedNonce: base64.RawURLEncoding.EncodeToString(sig), Name: fmt.Sprintf("10.66.%d.%d_fake", i/250, i%250)}
			rc.ClientInformation = jwt.ClientInformation{Nonce: nonce, Host: "192.0.2.66", Type: wsClientType, Kind: "Client"}
			if kind == "session" {
				rc.ConnectOptions.Token = `{"app":"speedtest","platform":"browser"}`
			}
			reqs[i] = rc
			tok, err := rc.Encode(server)
			if err != nil {
				b.Fatal(err)
			}
			if sealed[i], err = serverX.Seal([]byte(tok), xpub); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(kind+"/decide", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := f.c.decideAt(reqs[i%len(reqs)], ""); err == nil {
					b.Fatal("admitted")
				}
			}
		})
		b.Run(kind+"/shared-worker", func(b *testing.B) {
			// What a shared worker spends before passing the request to
			// the sessions' workers (see handle).
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				req, err := f.c.decodeQueued(sealed[i%len(sealed)], serverXPub, "", time.Time{})
				if err != nil || !limitedAddress(req, "") {
					b.Fatal(err)
				}
			}
		})
		b.Run(kind+"/authorize", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if out, err := f.c.authorize(sealed[i%len(sealed)], serverXPub); err != nil || len(out) == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}
