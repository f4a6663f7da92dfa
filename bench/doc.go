// Package bench is the workbench SDK of commandcontrol: list and watch the
// servers that are ONLINE, call a client function on a selection of them and
// collect the replies, and manage the registry through the control API.
//
// A [Client] is one operator connection to the broker, authenticated with the
// operator's nkey:
//
//	c, err := bench.Connect("nats://127.0.0.1:4222", bench.WithSeedFile("admin.nk"))
//	if err != nil { ... }
//	defer c.Close()
//
//	sel, _ := bench.ParseSelector("role=web,location=New-Brunswick")
//	res, err := c.Call(ctx, "current-load", nil, bench.CallOptions{Where: sel})
//
// A broker that is not on this host is reached over TLS, verified against
// the CA that signed its certificate ([WithTLSCA], [WithClientCert] for
// mutual TLS); [Connect] refuses plain text to it unless [WithPlaintext].
//
// # Calls
//
// A call knows whom it expects before it publishes: the presence snapshot
// filtered by the [Selector]. When the selection is everything online it
// publishes once on the broadcast subject, otherwise once per selected
// machine, all with the same reply inbox. It ends the moment the last
// expected machine has answered, or at the deadline, and reports three sets:
// the machines that replied (ok, or an error with a code), the expected ones
// that stayed silent, and the unexpected responders (for example an agent
// that came online after the snapshot).
//
// # Presence
//
// [Client.Watch] delivers the current list first, then live joined / left
// events, without a gap: it subscribes to the events before it asks for the
// snapshot and drops the events the snapshot already contains. When it may
// have missed events (a jump in their sequence numbers, a reconnection, events
// dropped) it says so and resynchronises from a fresh snapshot.
//
// # Sessions
//
// Sessions are browsers, mobile apps and devices of an operator-registered
// app ([Client.AppsAdd]) that expose the app's functions. [Client.Sessions]
// lists the ONLINE ones a [fleet.SessionQuery] selects (by app, location,
// user, …), [Client.WatchSessions] follows them like [Client.Watch], and a
// call with [CallOptions.Sessions] calls them with the same semantics as
// machines:
//
//	q := fleet.SessionQuery{Where: map[string]string{"city": "New Brunswick", "region": "New Jersey"}}
//	res, err := c.Call(ctx, "latencyCheck", map[string]any{"url": "https://example.com/"},
//		bench.CallOptions{Sessions: &q})
//
// # Selectors and filters
//
// [ParseSelector] chooses machines by labels and facts before a call;
// [ParseFilter] chooses results after it, with expressions such as
// `load1 > 10 and memory.used_percent > 90`.
package bench
