package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
)

// connect opens the operator connection the global flags describe, with
// extra options.
func (e *env) connect(extra ...bench.Option) (*bench.Client, error) {
	if e.g.key == "" {
		return nil, errors.New("no operator key: pass --key FILE or set CC_KEY " +
			"(the control service printed the admin key path at first start, e.g. ./cc-data/admin.nk)")
	}
	opts := append([]bench.Option{bench.WithSeedFile(e.g.key), bench.WithConnectTimeout(e.g.timeout)}, extra...)
	if e.g.tlsCA != "" {
		opts = append(opts, bench.WithTLSCA(e.g.tlsCA))
	}
	if e.g.tlsCert != "" || e.g.tlsKey != "" {
		opts = append(opts, bench.WithClientCert(e.g.tlsCert, e.g.tlsKey))
	}
	if e.g.allowPlaintext {
		opts = append(opts, bench.WithPlaintext())
	}
	c, err := bench.Connect(e.g.server, opts...)
	var te *natstls.Error
	switch {
	case err == nil:
		return c, nil
	case errors.As(err, &te):
		// The SDK's advice names its options; a user of cc-bench needs
		// the flags.
		te.Names = cliTLSNames
		return nil, te
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("operator key file %s does not exist: pass --key FILE or set CC_KEY "+
			"(the control service printed the admin key path at first start, e.g. ./cc-data/admin.nk)", e.g.key)
	case errors.Is(err, bench.ErrBadSeed):
		return nil, fmt.Errorf("operator key file %s does not hold an operator nkey seed (one line starting with SU): %v", e.g.key, err)
	case errors.Is(err, bench.ErrUnreachable):
		return nil, fmt.Errorf("cannot reach the broker at %s: is cc-control running? Start it, "+
			"or point --server (or CC_SERVER) at the broker", e.g.server)
	case errors.Is(err, bench.ErrNoService):
		// Before ErrRefused, which a refusal at the broker's auth
		// timeout wraps too: the key is not the problem.
		return nil, fmt.Errorf("the broker at %s is up but no control service answered: cc-control is down or not connected to this broker\n"+
			"  (the broker kept this connection waiting on its auth callout, which nobody answered)\n"+
			"  start cc-control (given --broker %s when the broker is cc-broker), or see its log", e.g.server, e.g.server)
	case errors.Is(err, bench.ErrRefused):
		return nil, fmt.Errorf("the broker at %s refused this key: is it registered as an operator? "+
			"An admin adds it with: cc-bench operators add NAME --pubkey %s --role viewer", e.g.server, publicKeyOf(e.g.key))
	}
	return nil, err
}

// cliTLSNames spell the TLS settings in cc-bench's errors.
var cliTLSNames = natstls.Names{CA: "--tls-ca FILE (or CC_TLS_CA)", Cert: "--tls-cert FILE --tls-key FILE", Plaintext: "--allow-plaintext"}

// publicKeyOf returns the public key of the seed in file, or a placeholder.
func publicKeyOf(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "PUBLIC-KEY"
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return "PUBLIC-KEY"
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "PUBLIC-KEY"
	}
	return pub
}

// explain adds what to do to the errors a user meets most.
func explain(err error) string {
	var fe *fleet.Error
	switch {
	case errors.As(err, &fe) && fe.Code == fleet.CodeForbidden:
		return err.Error() + "\n  this needs another role; check yours with: cc-bench whoami"
	case errors.Is(err, bench.ErrNoService):
		return err.Error() + "\n  the broker is up but no control service answered: cc-control is down or not connected to this broker"
	case errors.Is(err, context.DeadlineExceeded):
		return err.Error() + "\n  nothing answered in time; is cc-control running? Try a longer --timeout"
	}
	return err.Error()
}

// requestCtx bounds one request by --timeout.
func (e *env) requestCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, e.g.timeout)
}
