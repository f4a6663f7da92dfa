package controlsvc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// presenceTracker knows which machines are ONLINE and tells the fleet.
// It is cut like callout: its dependencies are its fields, the Service
// wires them (New, startServing), and each of its jobs has a file:
//
//   - presence.go: the ONLINE set itself (presence), built from what the
//     jobs below feed it;
//   - presence_events.go: intake of the brokers' connect, disconnect and
//     shutdown events, one machine one connection (supersede), and the
//     joined/left events it publishes;
//   - presence_resync.go: the resync against the brokers' CONNZ, of the
//     hub and of each remote site, at start, after a reconnect and
//     periodically;
//   - presence_brokers.go: the brokers' system API it uses (PING, CONNZ,
//     KICK);
//   - presence_sites.go: what one remote site can make it do, bounded;
//   - presence_store.go: presence.json, so a restart loses no watcher;
//   - presence_snapshot.go and presence_snapconns.go: the snapshot,
//     encoded once and served per operator;
//   - presence_hint.go: the agents' reconnect hint, sized from ONLINE.
type presenceTracker struct {
	log *slog.Logger
	// now is the service's clock (nil: time.Now).
	now func() time.Time
	reg *Registry
	// state is the ONLINE set.
	state *presence
	// sessions is the ONLINE set of sessions (session_presence.go):
	// connections of users "session:<id>" go there, not to state (nil:
	// they are ignored).
	sessions *sessionPresence
	// locate finds where a machine's address is (nil: nowhere).
	locate func(ip string) *fleet.Location
	// dataDir holds PresenceStateFile.
	dataDir string
	// leafSites are the remote sites whose events and brokers are
	// followed besides the hub's.
	leafSites      []broker.LeafSite
	resyncInterval time.Duration
	// reconnectRate and hintInterval size and repeat the agents' hint.
	reconnectRate float64
	hintInterval  time.Duration

	// sys is the SYSTEM account connection: the brokers' events and
	// system API. fl answers snapshots on the shared subject; announce
	// publishes presence events and hints. Set once the service has
	// connected, before start.
	sys, fl, announce *nats.Conn
	// dialFleet opens a connection of its own to the broker, as the
	// FLEET account (an operator's snapshot connection).
	dialFleet func(name string) (*nats.Conn, error)

	// admitMu orders adding a connection to presence (after checking its
	// identity is on record) against removing an identity (and then
	// listing its connections to close), so neither misses the other.
	admitMu sync.Mutex
	// limit bounds each machine's connections; connect events feed it
	// (nil: no bound).
	limit *connLimiter
	// resyncNow asks resyncLoop for a resync at once.
	resyncNow chan struct{}
	// closeSession closes a session found over its limits, logged and
	// audited (Service.sessionFlood); false when presence does not hold
	// it (the tracker then kicks the connection itself).
	closeSession func(id, reason string) bool
	// sites bounds what each remote site can make the tracker do.
	sites siteWork

	// markLinks and checkLinks keep one leaf link per site (see
	// leaflinks.go) at every resync of the hub (nil: no sites).
	markLinks  func() uint64
	checkLinks func(ctx context.Context, snap map[string]map[uint64]string, since uint64)
	// onRefused audits a connection closed as refused (nil: not
	// audited).
	onRefused func(kind, name, key, ip, reason string)
	// onEvent is told each presence event published, under presence's
	// lock, so it must not block: the history's record (nil: none).
	onEvent func(fleet.PresenceEvent)

	// Snapshot serving: the encoded entries, the queue of snapshots
	// waiting to be sent, the operators' own connections, and the
	// per-operator limits (snapLimit on an operator's own subject,
	// legacySnapLimit one bucket, legacySnapshotKey, shared by every
	// snapshot asked on the unattributed fleet.PresenceSnapshotSubject),
	// taken through limited (Service.limitedN: counted and logged).
	snapCache                  snapCache
	snapWork                   *fairQueue
	snapConns                  snapshotConns
	snapLimit, legacySnapLimit *opLimiter
	limited                    func(nc *nats.Conn, l *opLimiter, key, reply string, cost int) bool

	// leading tells that this replica is the presence publisher
	// (leader.go): false while another replica holds the lease. It is
	// true with no lease (one replica). leadGen counts the times it
	// became true.
	leading atomic.Bool
	leadGen atomic.Uint64
	// lease is the lease held or tried (nil: none; leader.go).
	lease atomic.Pointer[presenceLease]
	// awaitShared is how long a session connection whose admission is
	// not known waits for another replica's (session_share.go); 0: it
	// does not (no other replica).
	awaitShared time.Duration
	// published and hinted count the presence (and session) events and
	// the hints this replica published (metrics: which replica publishes).
	published, hinted atomic.Uint64

	// sessSnapLimit limits the session snapshots each operator asks for
	// on its own subject; sessSnapCache holds their encoded entries.
	sessSnapLimit *opLimiter
	sessSnapCache sessionSnapCache
}

// clock returns now, or time.Now when it is nil.
func (tr *presenceTracker) clock() time.Time {
	if tr.now != nil {
		return tr.now()
	}
	return time.Now()
}

// start follows the brokers' events, folds in a first resync, and serves
// snapshots, the resyncs and the hints until ctx ends; stop ends what it
// started (and saves presence), in reverse order. On an error what was
// started is stopped.
func (tr *presenceTracker) start(ctx context.Context) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	stopEvents, err := tr.watchEvents(ctx, tr.sys)
	if err != nil {
		return nil, err
	}
	stops = append(stops, stopEvents)
	// Remote sites are resynced in the background: a site cannot hold
	// up the start (presence_resync.go, resyncParts).
	if err := tr.resyncParts(ctx, false); err != nil {
		return nil, fmt.Errorf("initial presence snapshot: %w", err)
	}
	tr.savePresence()
	stops = append(stops, tr.savePresence)
	tr.snapshotWorkers(ctx)
	// Every replica hears it; the presence publisher alone answers (a
	// queue group would hand some requests to replicas that do not).
	snapSub, err := tr.fl.Subscribe(fleet.PresenceSnapshotSubject, tr.answerSnapshot)
	if err != nil {
		return nil, err
	}
	// A flood waits here, not in the broker, and is worked off at a map
	// lookup per request.
	_ = snapSub.SetPendingLimits(-1, 256<<20)
	stops = append(stops, func() { _ = snapSub.Unsubscribe() })
	tr.serveConnectedOperators()
	stops = append(stops, tr.closeSnapshotConns)
	// The loops end before stop goes on: a resync still running (a slow
	// site's) must not save presence.json after the service is closed.
	lctx, cancel := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Go(func() { tr.snapshotConnsLoop(lctx) })
	loops.Go(func() { tr.resyncLoop(lctx) })
	loops.Go(func() { tr.hintLoop(lctx) })
	loops.Go(func() { tr.sessionSubsLoop(lctx) })
	stops = append(stops, func() {
		cancel()
		loops.Wait()
	})
	return stop, nil
}

// resyncSoon asks for a resync at once (the SYSTEM connection
// reconnected: events may have been missed).
func (tr *presenceTracker) resyncSoon() {
	select {
	case tr.resyncNow <- struct{}{}:
	default:
	}
}

// online reports whether machine id is ONLINE (the call watcher's
// question).
func (tr *presenceTracker) online(id string) bool { return tr.state.online(id) }

// operatorConnections is how many live connections operator name has.
func (tr *presenceTracker) operatorConnections(name string) int {
	return len(tr.state.connsOf(operatorUserPrefix + name))
}

// admitted runs change (a registry change) with no connect event admitted
// while it runs, and returns the connections presence holds for the
// users it names (agentUserPrefix or operatorUserPrefix and a name): the
// connections to close, none of which a connect event can add after.
func (tr *presenceTracker) admitted(change func() []string) []connKey {
	tr.admitMu.Lock()
	defer tr.admitMu.Unlock()
	var conns []connKey
	for _, user := range change() {
		conns = append(conns, tr.state.connsOf(user)...)
	}
	return conns
}

// removeIdentity runs remove (taking user's identity off the registry)
// and returns user's connections, with no connect event admitted between
// the two.
func (tr *presenceTracker) removeIdentity(user string, remove func() error) ([]connKey, error) {
	var err error
	conns := tr.admitted(func() []string {
		if err = remove(); err != nil {
			return nil
		}
		return []string{user}
	})
	return conns, err
}

// audit audits a connection the tracker closed as refused.
func (tr *presenceTracker) audit(kind, name, key, ip, reason string) {
	if tr.onRefused != nil {
		tr.onRefused(kind, name, key, ip, reason)
	}
}
