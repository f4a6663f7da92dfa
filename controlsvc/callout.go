package controlsvc

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// AuthCalloutSubject is where the broker sends authorization requests.
const AuthCalloutSubject = "$SYS.REQ.USER.AUTH"

// Usernames the callout gives connections, as they appear in the broker's
// connect/disconnect events and CONNZ.
const (
	agentUserPrefix    = "agent:"
	operatorUserPrefix = "operator:"
)

type operatorIdentity struct {
	Name, Key, Role string
}

// callout answers the broker's auth callout: it verifies the connection's
// nkey signature over the server nonce, looks the identity up in the
// registry and issues a user JWT with exactly the permissions it needs.
type callout struct {
	keys     *Keys
	reg      *Registry
	log      *slog.Logger
	ttl      time.Duration
	readOnly []string
	onRefuse func(kind, who, ip, reason string)
	onGrant  func(kind, who string)
}

// subscribe starts answering callout requests on nc with a pool of workers;
// replicas share the load through a queue group.
func (c *callout) subscribe(nc *nats.Conn) (*nats.Subscription, func(), error) {
	ch := make(chan *nats.Msg, 8192)
	sub, err := nc.ChanQueueSubscribe(AuthCalloutSubject, "cc-control", ch)
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to auth callout: %w", err)
	}
	var wg sync.WaitGroup
	for range max(2, runtime.GOMAXPROCS(0)*2) {
		wg.Go(func() {
			for m := range ch {
				c.handle(m)
			}
		})
	}
	stop := func() {
		_ = sub.Unsubscribe()
		close(ch)
		wg.Wait()
	}
	return sub, stop, nil
}

func (c *callout) handle(m *nats.Msg) {
	data := m.Data
	serverXKey := m.Header.Get("Nats-Server-Xkey")
	if serverXKey != "" {
		var err error
		if data, err = c.keys.XKey.Open(m.Data, serverXKey); err != nil {
			c.log.Error("cannot decrypt auth callout request", "error", err)
			return
		}
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		c.log.Error("malformed auth callout request", "error", err)
		return
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	uc, err := c.decide(req)
	if err != nil {
		resp.Error = err.Error()
	} else if resp.Jwt, err = uc.Encode(c.keys.Issuer); err != nil {
		resp.Error = "internal error issuing credentials"
		c.log.Error("encode user JWT", "error", err)
	}
	token, err := resp.Encode(c.keys.Issuer)
	if err != nil {
		c.log.Error("encode callout response", "error", err)
		return
	}
	out := []byte(token)
	if serverXKey != "" {
		if out, err = c.keys.XKey.Seal(out, serverXKey); err != nil {
			c.log.Error("encrypt callout response", "error", err)
			return
		}
	}
	_ = m.Respond(out)
}

// decide returns the user claims for an authorised connection, or the
// reason it is refused.
func (c *callout) decide(req *jwt.AuthorizationRequestClaims) (*jwt.UserClaims, error) {
	opts, ci := req.ConnectOptions, req.ClientInformation
	if opts.Nkey == "" {
		return nil, c.refuse("unknown", opts.Name, ci.Host, "no nkey presented: agents connect with the machine's nkey (cc-agent --key FILE), operators with theirs (cc-bench --key FILE)")
	}
	if err := verifyNonce(opts.Nkey, ci.Nonce, opts.SignedNonce); err != nil {
		return nil, c.refuse("unknown", opts.Name, ci.Host, err.Error())
	}
	if op, ok := c.reg.OperatorByKey(opts.Nkey); ok {
		id := operatorIdentity{Name: op.Name, Key: op.Key, Role: op.Role}
		uc := c.userClaims(req, operatorUserPrefix+op.Name)
		uc.Permissions = operatorPermissions(id, c.readOnly)
		c.granted("operator", op.Name)
		return uc, nil
	}
	id := opts.Name
	if err := fleet.ValidateMachineID(id); err != nil {
		return nil, c.refuse("agent", id, ci.Host, "the connection name must be the machine id: "+err.Error())
	}
	m, ok := c.reg.Machine(id)
	if !ok {
		reason := fmt.Sprintf("machine %s is not in the registry; accept it with: cc-bench machines accept %s", id, id)
		c.reg.RecordPending(id, opts.Nkey, ci.Host, "not in the registry")
		return nil, c.refuse("agent", id, ci.Host, reason)
	}
	if m.Key != opts.Nkey {
		reason := fmt.Sprintf("machine %s presented key %s but the key on record is %s; if the machine was rebuilt, re-accept it with: cc-bench machines accept %s", id, opts.Nkey, m.Key, id)
		c.reg.RecordPending(id, opts.Nkey, ci.Host, "key does not match the key on record")
		return nil, c.refuse("agent", id, ci.Host, reason)
	}
	uc := c.userClaims(req, agentUserPrefix+id)
	uc.Permissions = agentPermissions(id)
	c.granted("agent", id)
	return uc, nil
}

func (c *callout) userClaims(req *jwt.AuthorizationRequestClaims, name string) *jwt.UserClaims {
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Audience = broker.FleetAccount
	uc.Name = name
	uc.Expires = time.Now().Add(c.ttl).Unix()
	return uc
}

func (c *callout) granted(kind, who string) {
	if c.onGrant != nil {
		c.onGrant(kind, who)
	}
}

func (c *callout) refuse(kind, who, ip, reason string) error {
	c.log.Warn("connection refused", "kind", kind, "name", who, "ip", ip, "reason", reason)
	if c.onRefuse != nil {
		c.onRefuse(kind, who, ip, reason)
	}
	return errors.New(reason)
}

// verifyNonce checks that sig is key's signature over the server nonce. The
// broker does not check it for keys it does not know, so the callout must.
func verifyNonce(key, nonce, sig string) error {
	if nonce == "" || sig == "" {
		return errors.New("no signed nonce presented; the client must sign the server nonce with its nkey")
	}
	kp, err := nkeys.FromPublicKey(key)
	if err != nil || !nkeys.IsValidPublicUserKey(key) {
		return fmt.Errorf("presented key %q is not a user nkey", key)
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return errors.New("signed nonce is not base64")
		}
	}
	if err := kp.Verify([]byte(nonce), raw); err != nil {
		return fmt.Errorf("signature over the nonce does not verify for key %s", key)
	}
	return nil
}
