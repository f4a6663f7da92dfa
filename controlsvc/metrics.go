package controlsvc

import (
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxFunctionLabels bounds the distinct function names metrics keep; the
// rest are counted under "other", so an operator calling made-up names
// cannot grow the label set without bound.
const maxFunctionLabels = 64

// metrics are the control service's Prometheus metrics. Machine counts
// are read at scrape time; authorisations are counted by the callout;
// calls are counted from the call watcher's records (the same records the
// audit log keeps, see [Service.OnCall]): every target's outcome, no
// response included, and the time from the call to its reply. Counting
// costs no extra message: the watcher already sees every reply.
type metrics struct {
	reg     *prometheus.Registry
	authz   *prometheus.CounterVec
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// auditLost counts audit records lost, by log; slow counts the call
	// watcher's slow-consumer events.
	auditLost *prometheus.CounterVec
	slow      prometheus.Counter
	// limited counts requests refused for an operator's rate limit.
	limited *prometheus.CounterVec

	mu  sync.Mutex
	fns map[string]bool
}

func newMetrics(s *Service) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), fns: map[string]bool{}}
	m.authz = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cc_authorisations_total",
		Help: "Connections the auth callout decided on, by kind (agent, operator, unknown) and result (granted, refused).",
	}, []string{"kind", "result"})
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cc_calls_total",
		Help: "Function calls per target, by function and outcome (ok, the error code, or no_response).",
	}, []string{"function", "outcome"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cc_call_duration_seconds",
		Help:    "Time from a function call to each agent's reply (ok or error), as the control service saw it.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"function"})
	m.auditLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cc_audit_records_lost_total",
		Help: "Audit records lost (the writer fell behind, or the call watcher overflowed), by log; each loss is also noted in the changes log.",
	}, []string{"log"})
	m.slow = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cc_callwatch_slow_consumer_total",
		Help: "Times the call watcher's subscriptions overflowed (slow consumer): calls or replies it missed are not in the audit.",
	})
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cc_requests_limited_total",
		Help: "Requests refused 429 because their operator was over its limit, by limit (presence snapshot, control API).",
	}, []string{"limit"})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(m.authz, m.calls, m.latency, m.auditLost, m.slow, m.limited,
		gauge("cc_machines_online", "Machines ONLINE now (at least one authorised connection).",
			func() float64 { return float64(len(s.presence.state.snapshot().Servers)) }),
		gauge("cc_machines_pending", "Machines refused and waiting to be accepted.",
			func() float64 { return float64(len(s.reg.Pending())) }),
		gauge("cc_machines_registered", "Machines in the registry.",
			func() float64 { return float64(len(s.reg.Machines())) }),
		gauge("cc_presence_publisher", "1 while this control service is the presence publisher (holds the lease, or runs alone): it publishes presence events, snapshots, the agents' hint and the call audit.",
			func() float64 {
				if s.presence.publishing() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cc_presence_events_published_total",
			Help: "Presence events (machines' and sessions') this control service published as the presence publisher."},
			func() float64 { return float64(s.presence.published.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cc_agent_hints_published_total",
			Help: "Reconnect hints to the agents this control service published as the presence publisher."},
			func() float64 { return float64(s.presence.hinted.Load()) }),
		gauge("cc_broker_connected", "1 while all of the control service's broker connections are up.",
			func() float64 {
				if s.healthy() == nil {
					return 1
				}
				return 0
			}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.reg.MustRegister(historyMetrics(s)...)
	// Per remote site (the sites file bounds the label set): how stale
	// what the hub shows of it may be, and what its rate dropped.
	seen := map[string]bool{}
	for _, site := range s.cfg.LeafSites {
		if seen[site.Name] {
			continue
		}
		seen[site.Name] = true
		labels := prometheus.Labels{"site": site.Name}
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cc_site_resync_age_seconds", ConstLabels: labels,
				Help: "Seconds since a presence resync last confirmed the site's machines (before the first, since the control service started): what the hub shows of the site is as old as that."},
				func() float64 { age, _, _ := s.presence.siteResyncAge(site.Name); return age.Seconds() }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cc_site_events_dropped_total", ConstLabels: labels,
				Help: "The site's connect, disconnect and shutdown events dropped for its rate (sized from its machines); each drop schedules a resync of the site."},
				func() float64 { return float64(s.presence.siteEventsDropped(site.Name)) }),
		)
	}
	return m
}

func (m *metrics) auditDropped(log string, n int) { m.auditLost.WithLabelValues(log).Add(float64(n)) }

func (m *metrics) slowConsumer() { m.slow.Inc() }

func (m *metrics) limitedRequest(limit string) { m.limited.WithLabelValues(limit).Inc() }

func (m *metrics) granted(kind, _ string) { m.authz.WithLabelValues(kind, "granted").Inc() }

func (m *metrics) refused(kind, _, _, _ string) { m.authz.WithLabelValues(kind, "refused").Inc() }

// fnLabel is fn, or "other" once maxFunctionLabels names are in use.
func (m *metrics) fnLabel(fn string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fns[fn] {
		return fn
	}
	if len(m.fns) >= maxFunctionLabels {
		return "other"
	}
	m.fns[fn] = true
	return fn
}

// call counts one watched call's outcomes.
func (m *metrics) call(rec fleet.AuditRecord) {
	if rec.Kind != fleet.AuditCall {
		return
	}
	label := m.fnLabel(rec.Function)
	for _, o := range rec.Outcomes {
		outcome := "ok"
		switch o.Status {
		case fleet.OutcomeNoResponse:
			outcome = "no_response"
		case fleet.OutcomeError:
			outcome = "error"
			if o.Code > 0 {
				outcome = strconv.Itoa(o.Code)
			}
		}
		m.calls.WithLabelValues(label, outcome).Inc()
		if o.Status != fleet.OutcomeNoResponse {
			m.latency.WithLabelValues(label).Observe(float64(o.DurationMS) / 1000)
		}
	}
}

// healthy reports nil when every broker connection of the service is up.
func (s *Service) healthy() error {
	var down []string
	for _, c := range []struct {
		name string
		nc   *nats.Conn
	}{{"sys", s.sys}, {"auth", s.ctl}, {"fleet", s.fl}} {
		if c.nc == nil || !c.nc.IsConnected() {
			down = append(down, c.name)
		}
	}
	if len(down) > 0 {
		return &healthError{down: down}
	}
	return nil
}

type healthError struct{ down []string }

func (e *healthError) Error() string {
	return "not connected to the broker: " + strings.Join(e.down, ", ") + " connection down"
}

// HTTPHandler serves /metrics (Prometheus text format), /healthz and
// /readyz. It may serve before Start returns (cc-control opens it first,
// so a slow start, such as JetStream waiting for its cluster, is seen as
// alive and starting):
//
//   - /healthz is liveness: 200 "starting" while Start runs, then 200
//     "ok" while the broker connections are up, 503 with the connection
//     that is down otherwise (and after Close).
//   - /readyz is readiness: 200 "ready" only once the callout, presence
//     and the control API answer, the embedded broker's client port is
//     open and the connections are up ([Service.Ready]); 503 with why not
//     otherwise: "starting", a connection down, or "stopped".
//   - /metrics is 503 "starting" until Start has returned.
func (s *Service) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	prom := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			plain(w, http.StatusServiceUnavailable, "starting")
			return
		}
		prom.ServeHTTP(w, r)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !s.ready.Load() && !s.stopping.Load():
			plain(w, http.StatusOK, "starting")
		case s.ready.Load():
			if err := s.healthy(); err != nil {
				plain(w, http.StatusServiceUnavailable, err.Error())
				return
			}
			plain(w, http.StatusOK, "ok")
		default:
			plain(w, http.StatusServiceUnavailable, "stopped")
		}
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case s.stopping.Load():
			plain(w, http.StatusServiceUnavailable, "stopped")
		case !s.ready.Load():
			plain(w, http.StatusServiceUnavailable, "starting: the callout, presence and the control API are not all answering yet")
		default:
			if err := s.healthy(); err != nil {
				plain(w, http.StatusServiceUnavailable, err.Error())
				return
			}
			plain(w, http.StatusOK, "ready")
		}
	})
	return mux
}

func plain(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text + "\n"))
}
