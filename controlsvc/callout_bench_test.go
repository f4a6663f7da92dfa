package controlsvc

import (
	"encoding/base64"
	"testing"

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
