package controlsvc

import (
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
)

// DefaultReadOnlyFunctions are the functions a viewer may call: the
// built-ins, all of which only read.
var DefaultReadOnlyFunctions = []string{
	"machine-info", "sw-list", "installed-sec-patches", "current-cpu-mem-diskio", "current-load",
}

// srvSubjects are the nats micro discovery subjects an agent answers.
func srvSubjects() []string {
	var out []string
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		out = append(out, "$SRV."+verb, "$SRV."+verb+"."+fleet.AgentServiceName, "$SRV."+verb+"."+fleet.AgentServiceName+".*")
	}
	return out
}

// agentPermissions: receive its own and broadcast calls, the control
// service's hints and micro discovery pings; publish nothing but replies to requests it received.
func agentPermissions(machineID string) jwt.Permissions {
	var p jwt.Permissions
	p.Sub.Allow.Add(fleet.FnRoot+"."+fleet.MachineToken(machineID)+".*", fleet.AllRoot+".*", fleet.AgentHintSubject)
	p.Sub.Allow.Add(srvSubjects()...)
	p.Pub.Deny.Add(">")
	p.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	return p
}

// operatorPermissions: publish the calls the role allows, its own control
// subjects, presence snapshot requests and micro discovery; subscribe to its
// own inbox and to presence events only.
func operatorPermissions(op operatorIdentity, readOnlyFns []string) jwt.Permissions {
	var p jwt.Permissions
	if op.Role == fleet.RoleAdmin {
		p.Pub.Allow.Add(fleet.FnRoot+".>", fleet.AllRoot+".>")
	} else {
		for _, fn := range readOnlyFns {
			p.Pub.Allow.Add(fleet.FnRoot+".*."+fn, fleet.AllRoot+"."+fn)
		}
	}
	p.Pub.Allow.Add(fleet.CtlRoot+"."+op.Key+".>", fleet.PresenceSnapshotSubject, "$SRV.>")
	p.Sub.Allow.Add(fleet.OperatorInbox(op.Key)+".>", fleet.PresenceEventsWildcard)
	return p
}
