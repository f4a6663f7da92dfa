package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go/micro"
)

// apiHandler runs one control operation for op (the calling operator,
// already looked up) with the request body.
type apiHandler func(ctx context.Context, op operatorIdentity, body []byte) (any, error)

// serveAPI registers the control API as the nats micro service cc-control
// on the FLEET connection: one endpoint per operation.
func (s *Service) serveAPI() (micro.Service, error) {
	svc, err := micro.AddService(s.fl, micro.Config{
		Name:        fleet.ControlServiceName,
		Version:     Version,
		Description: "commandcontrol control API: registry, operators, presence",
		QueueGroup:  "cc-control",
	})
	if err != nil {
		return nil, fmt.Errorf("start control API: %w", err)
	}
	ops := map[string]apiHandler{
		fleet.OpWhoAmI:          s.apiWhoAmI,
		fleet.OpMachinesList:    s.apiMachinesList,
		fleet.OpMachinesPending: s.apiMachinesPending,
		fleet.OpMachinesAccept:  s.apiMachinesAccept,
		fleet.OpMachinesAdd:     s.apiMachinesAdd,
		fleet.OpMachinesRemove:  s.apiMachinesRemove,
		fleet.OpMachinesLabel:   s.apiMachinesLabel,
		fleet.OpMachinesImport:  s.apiMachinesImport,
		fleet.OpOperatorsList:   s.apiOperatorsList,
		fleet.OpOperatorsAdd:    s.apiOperatorsAdd,
		fleet.OpOperatorsRemove: s.apiOperatorsRemove,
		fleet.OpAudit:           s.apiAudit,
		fleet.OpHistory:         s.apiHistory,
		fleet.OpAppsAdd:         s.apiAppsAdd,
		fleet.OpAppsList:        s.apiAppsList,
		fleet.OpAppsRemove:      s.apiAppsRemove,
		fleet.OpRegistryExport:  s.apiRegistryExport,
		fleet.OpRegistryImport:  s.apiRegistryImport,
		fleet.OpMachinesReject:  s.apiMachinesReject,
		fleet.OpMachinesDeny:    s.apiMachinesDeny,
		fleet.OpMachinesUndeny:  s.apiMachinesUndeny,
		fleet.OpMachinesDenied:  s.apiMachinesDenied,
		fleet.OpVersion:         s.apiVersion,
	}
	s.started = s.cfg.Now().UTC()
	for name, h := range ops {
		ep := "ctl-" + name
		hf := s.apiEndpoint(name, h)
		if name == fleet.OpHistory {
			hf = s.historyEndpoint(name, h) // queued per operator (history.go)
		}
		if err := svc.AddEndpoint(sanitizeEndpoint(ep), hf,
			micro.WithEndpointSubject(fleet.CtlOpWildcard(name))); err != nil {
			return nil, fmt.Errorf("control API endpoint %s: %w", name, err)
		}
	}
	return svc, nil
}

func sanitizeEndpoint(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '.' {
			b[i] = '-'
		}
	}
	return string(b)
}

// apiTimeout bounds one control API request, from its arrival.
const apiTimeout = 10 * time.Second

func (s *Service) apiEndpoint(name string, h apiHandler) micro.HandlerFunc {
	return func(req micro.Request) {
		if _, ok := s.admitAPI(req); !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		s.answerAPI(ctx, name, req, h)
	}
}

// admitAPI checks a control API request's reply subject and its
// operator's limit, and returns the operator's key; false (answered or
// dropped) when it is not run.
func (s *Service) admitAPI(req micro.Request) (string, bool) {
	if !answersToAsker(req.Subject(), req.Reply()) {
		// The requester picks the reply subject. Answering anywhere but
		// the asking operator's own inbox would publish, from this
		// service's connection, wherever the asker chose: another
		// operator's control subject, say. Such a request is not run.
		s.log.Warn("control API request refused: its reply subject is not the asking operator's inbox",
			"subject", req.Subject(), "reply", req.Reply())
		return "", false
	}
	// The broker lets only the operator with this key publish here:
	// the key's own limit applies.
	key, _, err := fleet.ParseCtlSubject(req.Subject())
	if err != nil || s.limited(s.ctlLimit, key, req.Reply()) {
		return "", false
	}
	return key, true
}

// answerAPI runs an admitted request and answers it.
func (s *Service) answerAPI(ctx context.Context, name string, req micro.Request, h apiHandler) {
	res, err := s.runAPI(ctx, name, req.Subject(), req.Data(), h)
	if err != nil {
		code, desc := fleet.CodeOf(err), err.Error()
		var fe *fleet.Error
		if errors.As(err, &fe) {
			desc = fe.Description
		}
		_ = req.Error(strconv.Itoa(code), desc, nil)
		return
	}
	_ = req.RespondJSON(res)
}

// answersToAsker reports whether reply is under the control inbox of the
// operator whose key the control subject names.
func answersToAsker(subject, reply string) bool {
	key, _, err := fleet.ParseCtlSubject(subject)
	return err == nil && fleet.IsControlReply(reply, key)
}

func (s *Service) runAPI(ctx context.Context, name, subject string, body []byte, h apiHandler) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("control API panic", "op", name, "panic", r)
			res, err = nil, fleet.Errorf(fleet.CodeInternal, "internal error in %s", name)
		}
	}()
	key, _, err := fleet.ParseCtlSubject(subject)
	if err != nil {
		return nil, fleet.Errorf(fleet.CodeBadRequest, "%v", err)
	}
	o, ok := s.reg.OperatorByKey(key)
	if !ok {
		return nil, fleet.Errorf(fleet.CodeForbidden, "key %s is not an operator", key)
	}
	op := operatorIdentity{Name: o.Name, Key: o.Key, Role: o.Role, Sessions: o.Sessions}
	if !fleet.ReadOnlyOps[name] && op.Role != fleet.RoleAdmin {
		s.log.Warn("control API refused", "operator", op.Name, "role", op.Role, "op", name)
		if name != fleet.OpAudit {
			s.auditRegistry(op, name, body, fleet.Errorf(fleet.CodeForbidden, "role %s may not %s", op.Role, name), "")
		}
		return nil, fleet.Errorf(fleet.CodeForbidden, "operator %s has role %s; %s needs role %s", op.Name, op.Role, name, fleet.RoleAdmin)
	}
	if limit := maxBody(name); len(body) > limit {
		return nil, fleet.Errorf(fleet.CodeTooLarge, "request is %d bytes; at most %d are allowed", len(body), limit)
	}
	res, err = h(ctx, op, body)
	if !fleet.ReadOnlyOps[name] && !adminReadOps[name] && name != fleet.OpAudit {
		s.auditRegistry(op, name, body, err, changeNote(res))
	}
	if !fleet.ReadOnlyOps[name] && !adminReadOps[name] {
		logged := string(body)
		if len(logged) > 512 {
			logged = logged[:512] + "…"
		}
		s.log.Info("control API", "operator", op.Name, "op", name, "request", logged, "note", changeNote(res), "error", errString(err))
	}
	return res, mapRegistryError(err)
}

// changeNote says what a registry change did beyond its request: a
// replaced machine key is recorded as such, not only as an accept or add.
func changeNote(res any) string {
	switch r := res.(type) {
	case fleet.MachineChange:
		if r.ReplacedKey != "" {
			return fmt.Sprintf("replaced key %s of machine %s with %s; closed %d live connection(s) made with the old key", r.ReplacedKey, r.ID, r.Key, r.Closed)
		}
	case registryImportDone:
		return r.note
	case fleet.ImportResult:
		if r.Replaced > 0 {
			return fmt.Sprintf("replaced the key of %d registered machine(s); closed %d live connection(s) made with the old keys", r.Replaced, r.Closed)
		}
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func mapRegistryError(err error) error {
	var fe *fleet.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return err
	case errors.Is(err, ErrNotFound):
		return fleet.Errorf(fleet.CodeNotFound, "%v", err)
	case errors.Is(err, ErrExists), errors.Is(err, ErrConflict):
		return fleet.Errorf(fleet.CodeConflict, "%v", err)
	case errors.Is(err, ErrInvalid):
		return fleet.Errorf(fleet.CodeBadRequest, "%v", err)
	}
	return fleet.Errorf(fleet.CodeInternal, "%v", err)
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fleet.Errorf(fleet.CodeBadRequest, "request must be a JSON object: %v", err)
	}
	return nil
}

func (s *Service) apiWhoAmI(_ context.Context, op operatorIdentity, _ []byte) (any, error) {
	return fleet.WhoAmI{Operator: op.Name, Role: op.Role, Key: op.Key}, nil
}

func (s *Service) apiMachinesAccept(ctx context.Context, op operatorIdentity, body []byte) (any, error) {
	var r fleet.MachineRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	if r.NoReplace {
		return s.changeMachineKey(ctx, r.ID, func() (fleet.MachineChange, error) { return s.reg.AcceptNewAt(r.ID, r.Key, r.Site, op.Name) })
	}
	return s.changeMachineKey(ctx, r.ID, func() (fleet.MachineChange, error) { return s.reg.AcceptAt(r.ID, r.Key, r.Site, op.Name) })
}

func (s *Service) apiMachinesAdd(ctx context.Context, op operatorIdentity, body []byte) (any, error) {
	var r fleet.MachineRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	if _, ok := s.reg.OperatorByKey(r.Key); ok {
		return nil, fleet.Errorf(fleet.CodeConflict, "key %s belongs to an operator; a machine needs its own key", r.Key)
	}
	return s.changeMachineKey(ctx, r.ID, func() (fleet.MachineChange, error) {
		return s.reg.SetMachineAt(r.ID, r.Key, r.Site, r.Labels, op.Name, r.Replace)
	})
}

func (s *Service) apiMachinesRemove(ctx context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.MachineRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	conns, err := s.presence.removeIdentity(agentUserPrefix+r.ID, func() error { return s.reg.RemoveMachine(r.ID) })
	if err != nil {
		return nil, err
	}
	closed := s.presence.kick(ctx, conns)
	// A removed machine is not ONLINE, even where the kick could not
	// reach (a site cut off from the hub: its credentials there expire
	// within --site-user-ttl, and it cannot be authorised again).
	s.presence.state.dropped(conns, "removed from the registry")
	if s.history != nil {
		s.history.forget(r.ID) // its last-seen record (history.go)
	}
	return fleet.RemoveResult{ID: r.ID, Closed: closed}, nil
}

func (s *Service) apiMachinesReject(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.MachineRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	if err := s.reg.Reject(r.ID); err != nil {
		return nil, err
	}
	return fleet.RemoveResult{ID: r.ID}, nil
}

func (s *Service) apiMachinesDeny(_ context.Context, op operatorIdentity, body []byte) (any, error) {
	var r fleet.DenyRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	return s.reg.Deny(r, op.Name)
}

func (s *Service) apiMachinesUndeny(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.DenyRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	return s.reg.Undeny(r)
}

func (s *Service) apiMachinesDenied(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	req, limit, err := decodeList(body)
	if err != nil {
		return nil, err
	}
	page, more, total := s.reg.DeniedAfter(req.After, limit)
	return encodePage("denied", page, more, total, s.replyBudget(), func(d fleet.Denied) string { return d.Entry() })
}

func (s *Service) apiMachinesLabel(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.MachineRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	return s.reg.Label(r.ID, r.Labels, r.Remove)
}

func (s *Service) apiOperatorsAdd(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.OperatorRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	for _, m := range s.reg.Machines() {
		if m.Key == r.Key {
			return nil, fleet.Errorf(fleet.CodeConflict, "key %s belongs to machine %s; an operator needs its own key", r.Key, m.ID)
		}
	}
	return s.reg.AddOperatorWith(r.Name, r.Key, r.Role, r.Sessions)
}

func (s *Service) apiOperatorsRemove(ctx context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.OperatorRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	conns, err := s.presence.removeIdentity(operatorUserPrefix+r.Name, func() error {
		_, err := s.reg.RemoveOperator(r.Name)
		return err
	})
	if err != nil {
		return nil, err
	}
	closed := s.presence.kick(ctx, conns)
	return fleet.RemoveResult{ID: r.Name, Closed: closed}, nil
}

// maxBody bounds a control request: small, but an import carries many
// machines (the broker's payload limit bounds it further).
func maxBody(op string) int {
	if op == fleet.OpMachinesImport || op == fleet.OpRegistryImport {
		return 64 << 20
	}
	return 64 * 1024
}

func (s *Service) apiMachinesImport(ctx context.Context, op operatorIdentity, body []byte) (any, error) {
	var r fleet.MachineImport
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	for _, m := range r.Machines {
		if _, ok := s.reg.OperatorByKey(m.Key); ok {
			return nil, fleet.Errorf(fleet.CodeConflict, "machine %s: key %s belongs to an operator", m.ID, m.Key)
		}
	}
	return s.importMachines(ctx, r.Machines, op.Name)
}
