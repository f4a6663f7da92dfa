package natstls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/internal/termsafe"
)

// Sentinel errors an *Error matches with errors.Is.
var (
	// ErrPlaintext: plain text to an address off this host, not allowed.
	ErrPlaintext = errors.New("plain text to a broker off this host")
	// ErrTLS: the TLS handshake with the broker failed.
	ErrTLS = errors.New("TLS with the broker failed")
)

// Kind is what went wrong.
type Kind int

// Kinds of [Error].
const (
	KindPlaintext      Kind = iota // plain text off this host, refused before dialling
	KindUntrusted                  // the broker's certificate is not signed by a trusted CA
	KindWrongHost                  // the certificate does not name the host dialled
	KindInvalid                    // the certificate is expired or otherwise invalid
	KindNoTLS                      // the broker offers no TLS
	KindNeedClientCert             // the broker requires a client certificate
	KindCertRejected               // the broker did not accept the client certificate
)

// Error is a connection refused by the rule, or a TLS failure explained.
// Its message names the URL and says what to do, in Names' spelling.
type Error struct {
	Kind  Kind
	URL   string
	Host  string
	Names Names
	// CA is the CA file given, if any.
	CA  string
	Err error
}

func (e *Error) Error() string {
	n := e.Names
	if n == (Names{}) {
		n = Flags
	}
	var msg string
	switch e.Kind {
	case KindPlaintext:
		return fmt.Sprintf("refusing to connect to %s in plain text: %s is not this host (loopback), so the network between could read and change the traffic; "+
			"verify the broker with %s (the CA that signed its certificate; a tls:// URL turns TLS on too), or on a network you trust allow plain text with %s",
			e.URL, e.Host, n.CA, n.Plaintext)
	case KindUntrusted:
		if e.CA != "" {
			msg = fmt.Sprintf("the broker at %s presented a certificate not signed by the CA in %s: check that %s names the CA that signed the broker's certificate", e.URL, e.CA, n.CA)
		} else {
			msg = fmt.Sprintf("the broker at %s presented a certificate not signed by a CA this system trusts: pass the CA that signed it with %s", e.URL, n.CA)
		}
	case KindWrongHost:
		msg = fmt.Sprintf("the broker's certificate is not valid for %s: connect by a name or address the certificate carries, or reissue it to include %s", e.URL, e.Host)
	case KindInvalid:
		msg = fmt.Sprintf("the broker at %s presented an invalid certificate (expired, not yet valid, or not for a server): renew it", e.URL)
	case KindNoTLS:
		msg = fmt.Sprintf("the broker at %s does not offer TLS: give it a certificate (cc-broker / cc-control --tls-cert, --tls-key), or on a network you trust drop the TLS settings here and allow plain text with %s",
			e.URL, n.Plaintext)
	case KindNeedClientCert:
		msg = fmt.Sprintf("the broker at %s requires a client certificate signed by its CA: pass %s", e.URL, n.Cert)
	case KindCertRejected:
		msg = fmt.Sprintf("the broker at %s did not accept this client certificate: check that %s names one signed by the CA the broker trusts for clients", e.URL, n.Cert)
	}
	if e.Err != nil {
		// The cause may quote the peer's certificate (its names), which
		// whoever answers at the address chose: no terminal escapes.
		msg += " (" + termsafe.String(e.Err.Error()) + ")"
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Is matches [ErrPlaintext] or [ErrTLS] by kind.
func (e *Error) Is(target error) bool {
	if e.Kind == KindPlaintext {
		return target == ErrPlaintext
	}
	return target == ErrTLS
}

// Explain turns a TLS failure from nats.Connect (or a reconnect) into an
// *Error that says what to do; other errors are returned as they are.
// urls is what was dialled.
func (d *Decision) Explain(err error, urls string) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	e := &Error{URL: redact(urls), Names: d.names, CA: d.ca, Err: err}
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	msg := err.Error()
	switch {
	case errors.As(err, &ua):
		e.Kind = KindUntrusted
	case errors.As(err, &he):
		e.Kind, e.Host = KindWrongHost, he.Host
	case errors.As(err, &ci):
		e.Kind = KindInvalid
	case errors.Is(err, nats.ErrSecureConnWanted):
		e.Kind = KindNoTLS
	case strings.Contains(msg, "certificate required"):
		// Go's client sends no certificate when the one it has is not
		// from a CA the broker lists: then it was the wrong one.
		e.Kind = KindNeedClientCert
		if d.hasClientCert() {
			e.Kind = KindCertRejected
		}
	case strings.Contains(msg, "bad certificate") || strings.Contains(msg, "unknown certificate authority") ||
		errors.Is(err, nats.ErrTLS) && strings.Contains(msg, "closed by remote after TLS handshake"):
		// The broker hung up on the handshake we finished: with TLS 1.3
		// that is how a refused client certificate shows.
		e.Kind = KindCertRejected
		if !d.hasClientCert() {
			e.Kind = KindNeedClientCert
		}
	default:
		return err
	}
	return e
}

func (d *Decision) hasClientCert() bool {
	return d.TLS != nil && (len(d.TLS.Certificates) > 0 || d.TLS.GetClientCertificate != nil)
}

// redact hides passwords in a URL list for messages.
func redact(urls string) string {
	list, err := Parse(urls)
	if err != nil {
		return urls
	}
	out := make([]string, len(list))
	for i, u := range list {
		out[i] = u.Redacted()
	}
	return strings.Join(out, ",")
}
