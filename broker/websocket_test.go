package broker_test

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestWebSocketPlaintextOnlyOnLoopback: a WebSocket listener without TLS
// is refused off loopback, the error naming the flag that allows it; on
// loopback, with the flag, or with TLS it is accepted.
func TestWebSocketPlaintextOnlyOnLoopback(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	auth := validAuth(t)
	for _, addr := range []string{"0.0.0.0:8443", "10.1.2.3:0", "[::]:9222", ":9222", "ws.example.com:443"} {
		cfg := broker.Config{Auth: auth, Listen: "127.0.0.1:0", WebSocketListen: addr}
		_, err := broker.Options(&cfg)
		if err == nil || !strings.Contains(err.Error(), "--allow-plaintext-websocket") || !strings.Contains(err.Error(), "--tls-cert") {
			t.Errorf("%s without TLS: got %v, want a refusal naming --allow-plaintext-websocket and --tls-cert", addr, err)
		}
		cfg.AllowPlaintextWebSocket = true
		if opts, err := broker.Options(&cfg); err != nil || !opts.Websocket.NoTLS {
			t.Errorf("%s with --allow-plaintext-websocket: %v", addr, err)
		}
		cfg = broker.Config{Auth: auth, Listen: "127.0.0.1:0", WebSocketListen: addr, TLS: broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key}}
		if opts, err := broker.Options(&cfg); err != nil || opts.Websocket.TLSConfig == nil {
			t.Errorf("%s with TLS: err %v, want TLS on the listener", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:9222"} {
		cfg := broker.Config{Auth: auth, Listen: "127.0.0.1:0", WebSocketListen: addr}
		if opts, err := broker.Options(&cfg); err != nil || !opts.Websocket.NoTLS {
			t.Errorf("%s (loopback) without TLS: %v", addr, err)
		}
	}
}

// TestWebSocketOptions: the listener gets no auth of its own (the
// client port's nkeys and callout serve), no compression, the auth
// timeout as its handshake timeout, the allowed origins as given, and
// with --tls-verify requires client certificates like the client port.
func TestWebSocketOptions(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	cfg := broker.Config{Auth: validAuth(t), Listen: "127.0.0.1:0", WebSocketListen: "127.0.0.1:0", AuthTimeout: 3 * time.Second,
		WebSocketOrigins: []string{"https://app.example", "http://localhost:8080/"},
		TLS:              broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: true}}
	opts, err := broker.Options(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	ws := opts.Websocket
	if ws.Host != "127.0.0.1" || ws.Port != -1 {
		t.Errorf("listen: got %s:%d, want 127.0.0.1 and a port the kernel picks", ws.Host, ws.Port)
	}
	if ws.NoAuthUser != "" || ws.Username != "" || ws.Token != "" || ws.JWTCookie != "" || ws.TokenCookie != "" {
		t.Errorf("the WebSocket listener has auth of its own, which would bypass the callout: %+v", ws)
	}
	if ws.Compression || ws.SameOrigin {
		t.Errorf("compression %v, same origin %v: want both off", ws.Compression, ws.SameOrigin)
	}
	if ws.HandshakeTimeout != 3*time.Second {
		t.Errorf("handshake timeout %s, want the auth timeout 3s", ws.HandshakeTimeout)
	}
	if want := []string{"https://app.example", "http://localhost:8080"}; !reflect.DeepEqual(ws.AllowedOrigins, want) {
		t.Errorf("origins %q, want %q", ws.AllowedOrigins, want)
	}
	if ws.TLSConfig == nil || ws.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("with --tls-verify the WebSocket listener must require client certificates too (TLS %v)", ws.TLSConfig != nil)
	}
}

// TestWebSocketRefusals: what would open the listener wider than asked,
// or cannot be what the operator meant, is refused with what to do.
func TestWebSocketRefusals(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	auth := validAuth(t)
	cases := map[string]struct {
		cfg  broker.Config
		want string
	}{
		"origins without a listener":   {broker.Config{WebSocketOrigins: []string{"https://a.example"}}, "--websocket-listen"},
		"plaintext without a listener": {broker.Config{AllowPlaintextWebSocket: true}, "--websocket-listen"},
		"bad address":                  {broker.Config{WebSocketListen: "127.0.0.1"}, "websocket listen address"},
		"bad port":                     {broker.Config{WebSocketListen: "127.0.0.1:http"}, "websocket listen address"},
		"wildcard origin":              {broker.Config{WebSocketListen: "127.0.0.1:0", WebSocketOrigins: []string{"*"}}, `origin "*"`},
		"origin without scheme":        {broker.Config{WebSocketListen: "127.0.0.1:0", WebSocketOrigins: []string{"app.example"}}, "scheme://host"},
		"origin with a path":           {broker.Config{WebSocketListen: "127.0.0.1:0", WebSocketOrigins: []string{"https://app.example/app"}}, "scheme://host"},
		"origin not http":              {broker.Config{WebSocketListen: "127.0.0.1:0", WebSocketOrigins: []string{"ftp://app.example"}}, "http or https"},
		"origin bad port":              {broker.Config{WebSocketListen: "127.0.0.1:0", WebSocketOrigins: []string{"https://app.example:99999"}}, "port"},
		"TLS without a key":            {broker.Config{WebSocketListen: "127.0.0.1:0", TLS: broker.TLSFiles{CertFile: certs.Cert}}, "key"},
		"hub with mutual leaf TLS": {broker.Config{WebSocketListen: "127.0.0.1:0", LeafListen: "127.0.0.1:0",
			LeafSites: []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}},
			LeafTLS:   broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: true}}, "--leaf-tls-verify"},
	}
	for name, c := range cases {
		c.cfg.Auth, c.cfg.Listen = auth, "127.0.0.1:0"
		if _, err := broker.Options(&c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
	// A hub whose sites need no certificate may serve WebSocket: a leaf
	// link there meets the same check as on the leaf port.
	cfg := broker.Config{Auth: auth, Listen: "127.0.0.1:0", WebSocketListen: "127.0.0.1:0", LeafListen: "127.0.0.1:0",
		LeafSites: []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}}}
	if _, err := broker.Options(&cfg); err != nil {
		t.Errorf("hub without --leaf-tls-verify: %v", err)
	}
}

// TestWebSocketURL: the listener's URL carries the port the kernel
// picked, ws:// in clear text and wss:// with TLS; a broker without one
// has no URL.
func TestWebSocketURL(t *testing.T) {
	b, _ := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.WebSocketListen = "127.0.0.1:0" }))
	u, err := url.Parse(b.WebSocketURL())
	if err != nil || u.Scheme != "ws" || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
		t.Errorf("WebSocketURL %q (%v): want ws://127.0.0.1:<picked port>", b.WebSocketURL(), err)
	}
	if got := upgrade(t, b.WebSocketURL(), nil, ""); got != http.StatusSwitchingProtocols {
		t.Errorf("upgrade at %s: status %d, want 101", b.WebSocketURL(), got)
	}
	certs := stacktest.TLSFiles(t)
	tb, _ := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) {
		c.WebSocketListen, c.TLS = "127.0.0.1:0", broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key}
	}))
	if !strings.HasPrefix(tb.WebSocketURL(), "wss://127.0.0.1:") {
		t.Errorf("with TLS: WebSocketURL %q, want wss://127.0.0.1:<port>", tb.WebSocketURL())
	}
	if got := upgrade(t, tb.WebSocketURL(), stacktest.ClientTLS(t, certs.CA, "", ""), ""); got != http.StatusSwitchingProtocols {
		t.Errorf("upgrade over TLS at %s: status %d, want 101", tb.WebSocketURL(), got)
	}
	plain, _ := brokertest.Start(t)
	if plain.WebSocketURL() != "" {
		t.Errorf("without a listener: WebSocketURL %q, want none", plain.WebSocketURL())
	}
}

// TestWebSocketOrigins: with allowed origins, a browser's upgrade from
// another page is refused (403) before any NATS is spoken; an allowed
// origin, and a client that sends none (not a browser), are let on to
// authentication.
func TestWebSocketOrigins(t *testing.T) {
	b, _ := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) {
		c.WebSocketListen, c.WebSocketOrigins = "127.0.0.1:0", []string{"https://app.example", "http://localhost:8080"}
	}))
	for origin, want := range map[string]int{
		"https://evil.example":   http.StatusForbidden,
		"http://app.example":     http.StatusForbidden, // another scheme is another origin
		"https://app.example:81": http.StatusForbidden,
		"null":                   http.StatusForbidden,
		"https://app.example":    http.StatusSwitchingProtocols,
		"http://localhost:8080":  http.StatusSwitchingProtocols,
		"":                       http.StatusSwitchingProtocols,
	} {
		if got := upgrade(t, b.WebSocketURL(), nil, origin); got != want {
			t.Errorf("Origin %q: status %d, want %d", origin, got, want)
		}
	}
	// Without allowed origins any page may connect (same-origin is off:
	// the page that uses it is rarely served from the broker's host).
	open, _ := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.WebSocketListen = "127.0.0.1:0" }))
	if got := upgrade(t, open.WebSocketURL(), nil, "https://evil.example"); got != http.StatusSwitchingProtocols {
		t.Errorf("no origins configured: status %d, want 101", got)
	}
}

// upgrade sends a raw WebSocket upgrade request to wsURL (over TLS with
// tc), with origin as its Origin header when set, and returns the status
// of the answer.
func upgrade(t *testing.T, wsURL string, tc *tls.Config, origin string) int {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	var conn net.Conn
	if tc != nil {
		conn, err = tls.DialWithDialer(&d, "tcp", u.Host, tc)
	} else {
		conn, err = d.Dial("tcp", u.Host)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+u.Host+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
