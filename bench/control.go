package bench

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Control sends the control API request op (one of the fleet.Op… names)
// with req encoded as JSON (nil for an empty body) and decodes the reply into
// reply (nil to ignore it). An error the control service answers is a
// *fleet.Error, e.g. code 403 for a viewer attempting an admin operation.
// Past the operator's control limit (429) Control waits as long as the
// service says and asks again, when ctx leaves room for that.
func (c *Client) Control(ctx context.Context, op string, req, reply any) error {
	if c.key == "" {
		return fmt.Errorf("%s: %w: the control API knows operators by their key; connect with WithSeedFile", op, ErrNoKey)
	}
	var body []byte
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return fmt.Errorf("%s: encode request: %w", op, err)
		}
	}
	data, err := c.request(ctx, fleet.CtlSubject(c.key, op), body)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if reply == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, reply); err != nil {
		return fmt.Errorf("%s: malformed reply: %w", op, err)
	}
	return nil
}

// WhoAmI returns the operator this client is and its role.
func (c *Client) WhoAmI(ctx context.Context) (*fleet.WhoAmI, error) {
	var w fleet.WhoAmI
	if err := c.Control(ctx, fleet.OpWhoAmI, nil, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// Machines lists the registry, each machine marked online or not. It
// follows the service's pages (see [fleet.ListRequest]) until the last.
func (c *Client) Machines(ctx context.Context) ([]fleet.Machine, error) {
	return listAll(ctx, c, fleet.OpMachinesList, func(l *fleet.MachineList) ([]fleet.Machine, fleet.ListPage) {
		return l.Machines, l.ListPage
	})
}

// PendingMachines lists the machine ids that tried to connect but are not
// in the registry (or presented another key), with every key that tried
// each; [fleet.Pending.MultipleKeys] flags an id tried with several.
func (c *Client) PendingMachines(ctx context.Context) ([]fleet.Pending, error) {
	return listAll(ctx, c, fleet.OpMachinesPending, func(l *fleet.PendingList) ([]fleet.Pending, fleet.ListPage) {
		return l.Pending, l.ListPage
	})
}

// listAll requests op's pages one after the other and returns every entry.
// A service that predates pages answers everything at once, with no Next.
func listAll[L, T any](ctx context.Context, c *Client, op string, items func(*L) ([]T, fleet.ListPage)) ([]T, error) {
	var out []T
	after := ""
	for {
		var l L
		if err := c.Control(ctx, op, fleet.ListRequest{After: after}, &l); err != nil {
			return nil, err
		}
		page, lp := items(&l)
		out = append(out, page...)
		if lp.Next == "" {
			return out, nil
		}
		if lp.Next <= after {
			return nil, fmt.Errorf("%s: the service sent the page cursor %q after %q; it must advance (is cc-control up to date?)", op, lp.Next, after)
		}
		after = lp.Next
	}
}

// AcceptMachine registers the pending machine id with key, the public key
// the operator checked on the host (cc-agent --print-key), or a unique
// prefix of one of the keys that tried the id. key may be "" only when a
// single key tried the id; otherwise the service refuses (code 409) and
// lists the keys. When id was registered with another key, the reply's
// ReplacedKey names it and the old key's live connections are closed.
func (c *Client) AcceptMachine(ctx context.Context, id, key string) (*fleet.MachineChange, error) {
	return machineChange(ctx, c, fleet.OpMachinesAccept, fleet.MachineRequest{ID: id, Key: key})
}

// AddMachine registers machine id with its public nkey and labels. It is
// refused (code 409) when id is registered already: see [Client.ReplaceMachine].
func (c *Client) AddMachine(ctx context.Context, id, key string, labels map[string]string) (*fleet.Machine, error) {
	return c.machineOp(ctx, fleet.OpMachinesAdd, fleet.MachineRequest{ID: id, Key: key, Labels: labels})
}

// ReplaceMachine registers machine id with key and labels, replacing its
// entry if it has one; when that gives it another key, the reply's
// ReplacedKey names the old key, whose live connections are closed.
func (c *Client) ReplaceMachine(ctx context.Context, id, key string, labels map[string]string) (*fleet.MachineChange, error) {
	return machineChange(ctx, c, fleet.OpMachinesAdd, fleet.MachineRequest{ID: id, Key: key, Labels: labels, Replace: true})
}

// AddMachineAt registers machine id with key and labels at remote site
// (its broker then admits it, and the hub's ONLINE list believes only that
// site about it); replace as [Client.ReplaceMachine]. site "" is the hub.
func (c *Client) AddMachineAt(ctx context.Context, id, key, site string, labels map[string]string, replace bool) (*fleet.MachineChange, error) {
	return machineChange(ctx, c, fleet.OpMachinesAdd, fleet.MachineRequest{ID: id, Key: key, Labels: labels, Site: site, Replace: replace})
}

// AcceptMachineAt is [Client.AcceptMachine] placing the machine at
// remote site ("": where it is registered already, else the hub).
func (c *Client) AcceptMachineAt(ctx context.Context, id, key, site string) (*fleet.MachineChange, error) {
	return machineChange(ctx, c, fleet.OpMachinesAccept, fleet.MachineRequest{ID: id, Key: key, Site: site})
}

func machineChange(ctx context.Context, c *Client, op string, req fleet.MachineRequest) (*fleet.MachineChange, error) {
	var raw json.RawMessage
	if err := c.Control(ctx, op, req, &raw); err != nil {
		return nil, err
	}
	return decodeOptional[fleet.MachineChange](raw), nil
}

// ImportMachines registers many machines in one registry write (admin).
func (c *Client) ImportMachines(ctx context.Context, machines []fleet.MachineRequest) (int, error) {
	var r fleet.ImportResult
	if err := c.Control(ctx, fleet.OpMachinesImport, fleet.MachineImport{Machines: machines}, &r); err != nil {
		return 0, err
	}
	return r.Added, nil
}

// LabelMachine sets the labels set and drops the label keys remove.
func (c *Client) LabelMachine(ctx context.Context, id string, set map[string]string, remove []string) (*fleet.Machine, error) {
	return c.machineOp(ctx, fleet.OpMachinesLabel, fleet.MachineRequest{ID: id, Labels: set, Remove: remove})
}

// RemoveMachine deletes machine id from the registry; the broker closes its
// live connections at once.
func (c *Client) RemoveMachine(ctx context.Context, id string) (*fleet.RemoveResult, error) {
	var r fleet.RemoveResult
	if err := c.Control(ctx, fleet.OpMachinesRemove, fleet.MachineRequest{ID: id}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) machineOp(ctx context.Context, op string, req fleet.MachineRequest) (*fleet.Machine, error) {
	var raw json.RawMessage
	if err := c.Control(ctx, op, req, &raw); err != nil {
		return nil, err
	}
	return decodeOptional[fleet.Machine](raw), nil
}

// Operators lists the operators and their roles.
func (c *Client) Operators(ctx context.Context) ([]fleet.Operator, error) {
	return listAll(ctx, c, fleet.OpOperatorsList, func(l *fleet.OperatorList) ([]fleet.Operator, fleet.ListPage) {
		return l.Operators, l.ListPage
	})
}

// AddOperator registers an operator: a name, its public nkey and a role
// ([fleet.RoleAdmin] or [fleet.RoleViewer]). It returns the entry (nil if the
// service sent none).
func (c *Client) AddOperator(ctx context.Context, name, key, role string) (*fleet.Operator, error) {
	var raw json.RawMessage
	if err := c.Control(ctx, fleet.OpOperatorsAdd, fleet.OperatorRequest{Name: name, Key: key, Role: role}, &raw); err != nil {
		return nil, err
	}
	return decodeOptional[fleet.Operator](raw), nil
}

// RemoveOperator deletes the operator name; its live connections are closed.
func (c *Client) RemoveOperator(ctx context.Context, name string) (*fleet.RemoveResult, error) {
	var r fleet.RemoveResult
	if err := c.Control(ctx, fleet.OpOperatorsRemove, fleet.OperatorRequest{Name: name}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// decodeOptional decodes raw as a T, or returns nil when raw is empty, null
// or of another shape: the contract does not fix these replies' bodies.
func decodeOptional[T any](raw json.RawMessage) *T {
	var v T
	if len(raw) == 0 || string(raw) == "null" || json.Unmarshal(raw, &v) != nil {
		return nil
	}
	return &v
}

// AcceptNewMachineAt is [Client.AcceptMachineAt] that is refused (code
// 409) when id is registered already: what a bulk accept uses, so that a
// key a stranger tried a registered id with never replaces its key.
func (c *Client) AcceptNewMachineAt(ctx context.Context, id, key, site string) (*fleet.MachineChange, error) {
	return machineChange(ctx, c, fleet.OpMachinesAccept, fleet.MachineRequest{ID: id, Key: key, Site: site, NoReplace: true})
}

// RejectMachine drops the pending machine id (a registered machine is
// never touched; code 404 when id is not pending).
func (c *Client) RejectMachine(ctx context.Context, id string) error {
	return c.Control(ctx, fleet.OpMachinesReject, fleet.MachineRequest{ID: id}, nil)
}

// Deny puts a machine id or a public key (exactly one) on the deny list:
// the auth callout then refuses it at once and records nothing as
// pending. The reply names the pending entries it dropped.
func (c *Client) Deny(ctx context.Context, id, key string) (*fleet.DenyResult, error) {
	var r fleet.DenyResult
	if err := c.Control(ctx, fleet.OpMachinesDeny, fleet.DenyRequest{ID: id, Key: key}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Undeny takes a machine id or a public key off the deny list.
func (c *Client) Undeny(ctx context.Context, id, key string) (*fleet.Denied, error) {
	var r fleet.Denied
	if err := c.Control(ctx, fleet.OpMachinesUndeny, fleet.DenyRequest{ID: id, Key: key}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// DenyList lists the deny list, sorted by entry.
func (c *Client) DenyList(ctx context.Context) ([]fleet.Denied, error) {
	return listAll(ctx, c, fleet.OpMachinesDenied, func(l *fleet.DeniedList) ([]fleet.Denied, fleet.ListPage) {
		return l.Denied, l.ListPage
	})
}
