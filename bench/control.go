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

// Machines lists the registry, each machine marked online or not.
func (c *Client) Machines(ctx context.Context) ([]fleet.Machine, error) {
	var l fleet.MachineList
	if err := c.Control(ctx, fleet.OpMachinesList, nil, &l); err != nil {
		return nil, err
	}
	return l.Machines, nil
}

// PendingMachines lists the machines that tried to connect but are not in
// the registry.
func (c *Client) PendingMachines(ctx context.Context) ([]fleet.Pending, error) {
	var l fleet.PendingList
	if err := c.Control(ctx, fleet.OpMachinesPending, nil, &l); err != nil {
		return nil, err
	}
	return l.Pending, nil
}

// AcceptMachine moves a pending machine into the registry with the key it
// presented, and returns the registry entry (nil if the service sent none).
func (c *Client) AcceptMachine(ctx context.Context, id string) (*fleet.Machine, error) {
	return c.machineOp(ctx, fleet.OpMachinesAccept, fleet.MachineRequest{ID: id})
}

// AddMachine registers machine id with its public nkey and labels.
func (c *Client) AddMachine(ctx context.Context, id, key string, labels map[string]string) (*fleet.Machine, error) {
	return c.machineOp(ctx, fleet.OpMachinesAdd, fleet.MachineRequest{ID: id, Key: key, Labels: labels})
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
	var l fleet.OperatorList
	if err := c.Control(ctx, fleet.OpOperatorsList, nil, &l); err != nil {
		return nil, err
	}
	return l.Operators, nil
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
