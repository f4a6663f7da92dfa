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
//	sys.commandControl.fn.<machine-token>.<function>.<caller>  call one machine
//	sys.commandControl.all.<function>.<caller>                 call every agent
//	sys.commandControl.presence.snapshot                       request: who is ONLINE now
//	sys.commandControl.ctl.<operator-key>.presence.snapshot    the same, attributed
//	sys.commandControl.presence.event.joined.<token>           a machine came ONLINE
//	sys.commandControl.presence.event.left.<token>             a machine went OFFLINE
//	sys.commandControl.ctl.<operator-key>.<op>                 control API (registry, operators)
//	_INBOX_cc.<caller>.<target>.<call>.<copy>                  a call's replies (replies.go)
//	_INBOX_cc.<operator-key>.@ctl.>                            control and snapshot answers
//	_INBOX_cc.<operator-key>.@srv.>                            micro discovery answers (any agent's word)
//	_INBOX_cc.<operator-key>.<machine-token>.@srv.>            one machine's discovery answer (attributed)
//
// <caller> is the calling operator's public key: the broker lets an
// operator publish only with its own. Where each is built and parsed:
// subjects.go, replies.go, agentsubjects.go ($SRV discovery),
// sysevents.go (the broker's $SYS), sites.go (a remote site's renaming),
// headers.go and errors.go. testdata/wire/ holds vectors other languages'
// SDKs test against.
//
// A machine token is the machine id with every "." replaced by "~"
// (10.0.0.5_web01 → 10~0~0~5_web01); see [MachineToken].
//
// Requests and replies are JSON. Errors are sent the way nats.go micro sends
// them: an empty or short body with the headers [HeaderErrorCode] and
// [HeaderError].
package fleet
