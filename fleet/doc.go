// Package fleet is the wire contract every side of commandcontrol shares:
// subjects, message types, machine-id encoding and error codes.
//
// It imports nothing of this module. Agents, the control service, the
// workbench SDK and tests all speak through the names defined here, so a
// subject or payload is changed in exactly one place.
//
// # Subjects
//
// Everything lives under [Prefix] (sys.commandControl):
//
//	sys.commandControl.fn.<machine-token>.<function>   call one machine
//	sys.commandControl.all.<function>                  call every agent
//	sys.commandControl.presence.snapshot               request: who is ONLINE now
//	sys.commandControl.presence.event.joined.<token>   a machine came ONLINE
//	sys.commandControl.presence.event.left.<token>     a machine went OFFLINE
//	sys.commandControl.ctl.<operator-key>.<op>         control API (registry, operators)
//	_INBOX_cc.<operator-key>.>                         an operator's reply inbox
//
// A machine token is the machine id with every "." replaced by "~"
// (10.0.0.5_web01 → 10~0~0~5_web01); see [MachineToken].
//
// Requests and replies are JSON. Errors are sent the way nats.go micro sends
// them: an empty or short body with the headers [HeaderErrorCode] and
// [HeaderError].
package fleet
