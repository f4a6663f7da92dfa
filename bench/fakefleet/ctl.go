package fakefleet

import (
	"encoding/json"
	"sort"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// serveCtl answers one control API request; c.mu is held.
func (c *Control) serveCtl(key, op string, body []byte) (any, *fleet.Error) {
	who, ok := c.operatorByKey(key)
	if !ok {
		return nil, fleet.Errorf(fleet.CodeForbidden, "key %s is not an operator", key)
	}
	if !fleet.ReadOnlyOps[op] && who.Role != fleet.RoleAdmin {
		return nil, fleet.Errorf(fleet.CodeForbidden, "operator %s is a %s; %s needs an admin", who.Name, who.Role, op)
	}
	var mreq fleet.MachineRequest
	var oreq fleet.OperatorRequest
	if len(body) > 0 {
		_ = json.Unmarshal(body, &mreq)
		_ = json.Unmarshal(body, &oreq)
	}
	switch op {
	case fleet.OpWhoAmI:
		return fleet.WhoAmI{Operator: who.Name, Role: who.Role}, nil
	case fleet.OpMachinesList:
		return fleet.MachineList{Machines: c.machineList()}, nil
	case fleet.OpMachinesPending:
		l := fleet.PendingList{Pending: []fleet.Pending{}}
		for _, p := range c.pending {
			l.Pending = append(l.Pending, p)
		}
		sort.Slice(l.Pending, func(i, j int) bool { return l.Pending[i].ID < l.Pending[j].ID })
		return l, nil
	case fleet.OpMachinesAccept:
		p, ok := c.pending[mreq.ID]
		if !ok {
			return nil, fleet.Errorf(fleet.CodeNotFound, "machine %s is not pending", mreq.ID)
		}
		delete(c.pending, mreq.ID)
		m := fleet.Machine{ID: p.ID, Key: p.Key, AddedAt: c.Now(), AddedBy: who.Name}
		c.machines[m.ID] = m
		return m, nil
	case fleet.OpMachinesAdd:
		if _, ok := c.machines[mreq.ID]; ok {
			return nil, fleet.Errorf(fleet.CodeConflict, "machine %s is already in the registry", mreq.ID)
		}
		m := fleet.Machine{ID: mreq.ID, Key: mreq.Key, Labels: mreq.Labels, AddedAt: c.Now(), AddedBy: who.Name}
		c.machines[m.ID] = m
		return m, nil
	case fleet.OpMachinesRemove:
		if _, ok := c.machines[mreq.ID]; !ok {
			return nil, fleet.Errorf(fleet.CodeNotFound, "machine %s is not in the registry", mreq.ID)
		}
		delete(c.machines, mreq.ID)
		closed := c.servers[mreq.ID].Connections
		return fleet.RemoveResult{ID: mreq.ID, Closed: closed}, nil
	case fleet.OpMachinesLabel:
		return c.label(mreq)
	case fleet.OpOperatorsList:
		l := fleet.OperatorList{Operators: []fleet.Operator{}}
		for _, o := range c.operators {
			l.Operators = append(l.Operators, o)
		}
		sort.Slice(l.Operators, func(i, j int) bool { return l.Operators[i].Name < l.Operators[j].Name })
		return l, nil
	case fleet.OpOperatorsAdd:
		if _, ok := c.operators[oreq.Name]; ok {
			return nil, fleet.Errorf(fleet.CodeConflict, "operator %s exists", oreq.Name)
		}
		o := fleet.Operator{Name: oreq.Name, Key: oreq.Key, Role: oreq.Role, AddedAt: c.Now()}
		c.operators[o.Name] = o
		return o, nil
	case fleet.OpOperatorsRemove:
		if _, ok := c.operators[oreq.Name]; !ok {
			return nil, fleet.Errorf(fleet.CodeNotFound, "operator %s not found", oreq.Name)
		}
		delete(c.operators, oreq.Name)
		return fleet.RemoveResult{ID: oreq.Name}, nil
	}
	return nil, fleet.Errorf(fleet.CodeNotFound, "unknown operation %q", op)
}

func (c *Control) machineList() []fleet.Machine {
	l := []fleet.Machine{}
	for _, m := range c.machines {
		_, m.Online = c.servers[m.ID]
		l = append(l, m)
	}
	sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	return l
}

func (c *Control) label(req fleet.MachineRequest) (any, *fleet.Error) {
	m, ok := c.machines[req.ID]
	if !ok {
		return nil, fleet.Errorf(fleet.CodeNotFound, "machine %s is not in the registry", req.ID)
	}
	labels := map[string]string{}
	for k, v := range m.Labels {
		labels[k] = v
	}
	for k, v := range req.Labels {
		labels[k] = v
	}
	for _, k := range req.Remove {
		delete(labels, k)
	}
	m.Labels = labels
	c.machines[m.ID] = m
	return m, nil
}
