package broker

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// The WebSocket listener serves NATS over WebSocket, for sessions
// (browsers, mobile apps, devices) and for any agent or operator that can
// only speak HTTP(S). It is nats-server's own listener with no
// authentication of its own: a WebSocket client is asked for the same
// nonce signature and goes through the same auth callout as a client on
// the client port, so the control service admits or refuses it exactly
// alike (it sees the connection's type, "websocket", in the request).
//
// What the listener adds to the client port, and how each is closed:
//
//   - Clear text off this machine: with --tls-cert and --tls-key it speaks
//     only TLS (wss://); without, it is refused on a non-loopback address
//     unless AllowPlaintextWebSocket (a proxy in front that ends TLS).
//   - A second door around mutual TLS: with --tls-verify every client,
//     here too, must present a certificate the CA signed.
//   - Leaf links: nats-server accepts a leaf-node connection on the
//     WebSocket port (path /leafnode) whenever the broker has a leaf
//     listener. Such a link never meets the leaf listener's TLS, so a hub
//     that requires sites' certificates (LeafTLS.Verify) refuses to open
//     a WebSocket listener at all.
//   - Other web pages: with WebSocketOrigins only pages from those
//     origins may open a connection from a browser (a browser sends the
//     page's Origin; a non-browser client may send anything, so this
//     only keeps third-party pages from using a visitor's browser).
//   - Slow handshakes: the HTTP upgrade (and the TLS handshake before
//     it) must finish within the auth timeout.
//
// The client's address the callout sees is the TCP peer's; an
// X-Forwarded-For header sent by the client changes nothing the callout
// is told (nats-server only shows it in logs and monitoring).

// websocketOptions configures nats-server's WebSocket listener from cfg
// (defaults filled in) and refuses what would open it too wide.
func websocketOptions(cfg *Config, opts *server.Options) error {
	if cfg.WebSocketListen == "" {
		if len(cfg.WebSocketOrigins) > 0 || cfg.AllowPlaintextWebSocket {
			return errors.New("broker: WebSocket origins or --allow-plaintext-websocket given without a WebSocket listen address (--websocket-listen HOST:PORT)")
		}
		return nil
	}
	host, port, err := splitHostPort("websocket listen", cfg.WebSocketListen)
	if err != nil {
		return err
	}
	if cfg.LeafListen != "" && cfg.LeafTLS.Verify {
		return fmt.Errorf("broker: a WebSocket listener (%s) on a hub whose leaf links require sites' certificates (--leaf-tls-verify) would let a site link over WebSocket without one (nats-server takes leaf links on the WebSocket port too). "+
			"Serve WebSocket from another broker of the cluster (one without --leaf-listen), or drop --leaf-tls-verify", cfg.WebSocketListen)
	}
	origins, err := websocketOrigins(cfg.WebSocketOrigins)
	if err != nil {
		return err
	}
	ws := &opts.Websocket
	ws.Host, ws.Port = host, port
	ws.AllowedOrigins = origins
	ws.Compression = false
	ws.HandshakeTimeout = cfg.AuthTimeout
	if !cfg.TLS.IsZero() {
		tc, err := cfg.TLS.ServerConfig("WebSocket listener (--tls-cert, --tls-key, --tls-ca)")
		if err != nil {
			return err
		}
		ws.TLSConfig = tc
		return nil
	}
	if !isLoopback(host) && !cfg.AllowPlaintextWebSocket {
		return fmt.Errorf("broker: WebSocket listen %s is not a loopback address and has no TLS: every session's, agent's and operator's traffic would cross the network in clear text. "+
			"Add --tls-cert and --tls-key (the listener then speaks wss://), or --allow-plaintext-websocket if a proxy in front of it ends TLS", cfg.WebSocketListen)
	}
	ws.NoTLS = true
	return nil
}

// websocketOrigins checks the allowed origins: each an http or https
// origin, scheme://host[:port], as a browser sends it in Origin.
func websocketOrigins(list []string) ([]string, error) {
	var out []string
	for _, o := range list {
		o = strings.TrimSpace(o)
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("broker: WebSocket origin %q: want scheme://host[:port] with http or https, as a browser sends it (e.g. https://app.example.com)", o)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("broker: WebSocket origin %q: port %q is not a number from 1 to 65535", o, p)
			}
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out, nil
}

// websocketWarning says what an allowed but open WebSocket listener
// leaves open, or "".
func websocketWarning(cfg *Config, opts *server.Options) string {
	if cfg.WebSocketListen == "" || opts.Websocket.TLSConfig != nil || isLoopback(opts.Websocket.Host) {
		return ""
	}
	return fmt.Sprintf("WebSocket listen %s runs without TLS (--allow-plaintext-websocket): keep it behind a proxy that ends TLS, or its clients' traffic crosses the network in clear text", cfg.WebSocketListen)
}

// WebSocketURL is the ws:// (or, with TLS, wss://) URL of the WebSocket
// listener, with the port the kernel picked when it was 0; "" when the
// broker has none or has not started. An unspecified host (0.0.0.0, ::)
// is given as 127.0.0.1.
func (b *Broker) WebSocketURL() string {
	if b.wsPort == 0 {
		return ""
	}
	host, _, err := net.SplitHostPort(b.cfg.WebSocketListen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	scheme := "ws"
	if b.wsTLS {
		scheme = "wss"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(b.wsPort))
}

// startedWebSocket records the WebSocket listener's port once the server
// listens (the kernel's pick when the port was 0).
func (b *Broker) startedWebSocket() error {
	if b.cfg.WebSocketListen == "" {
		return nil
	}
	v, err := b.srv.Varz(nil)
	if err != nil {
		return fmt.Errorf("broker: WebSocket listener: %w", err)
	}
	if v.Websocket.Port <= 0 {
		return fmt.Errorf("broker: WebSocket listener on %s did not start (is the port in use?)", b.cfg.WebSocketListen)
	}
	b.wsPort = v.Websocket.Port
	return nil
}
