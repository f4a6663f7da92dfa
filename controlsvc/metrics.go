package controlsvc

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

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
// are read at scrape time; authorisations are counted by the callout; calls
// are counted from the replies agents send to operators' inboxes, which
// carry the machine, the function, the duration and the error code (see
// [Service.observeCalls]). The control service never subscribes to call
// subjects: that would make it a responder and hide the broker's "no
// responders" from callers.
type metrics struct {
	reg     *prometheus.Registry
	authz   *prometheus.CounterVec
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	sub     atomic.Pointer[nats.Subscription]

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
		Help: "Function replies seen from agents, by function and outcome (ok, or the error code).",
	}, []string{"function", "outcome"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cc_call_duration_seconds",
		Help:    "How long agents took to answer a function call, as reported in their replies.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"function"})
	dropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "cc_call_replies_dropped_total",
		Help: "Replies the call observer could not keep up with (cc_calls_total misses them).",
	}, func() float64 {
		if sub := m.sub.Load(); sub != nil {
			if n, err := sub.Dropped(); err == nil {
				return float64(n)
			}
		}
		return 0
	})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(m.authz, m.calls, m.latency, dropped,
		gauge("cc_machines_online", "Machines ONLINE now (at least one authorised connection).",
			func() float64 { return float64(len(s.presence.snapshot().Servers)) }),
		gauge("cc_machines_pending", "Machines refused and waiting to be accepted.",
			func() float64 { return float64(len(s.reg.Pending())) }),
		gauge("cc_machines_registered", "Machines in the registry.",
			func() float64 { return float64(len(s.reg.Machines())) }),
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
	return m
}

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

// reply counts one function reply. Messages that are not agents' function
// replies (control API answers, presence snapshots, discovery) are ignored.
func (m *metrics) reply(msg *nats.Msg) {
	fn := msg.Header.Get(fleet.HeaderFunction)
	if fn == "" || msg.Header.Get(fleet.HeaderMachine) == "" {
		return
	}
	outcome := "ok"
	if code := msg.Header.Get(fleet.HeaderErrorCode); code != "" {
		if _, err := strconv.Atoi(code); err != nil {
			code = "invalid"
		}
		outcome = code
	}
	label := m.fnLabel(fn)
	m.calls.WithLabelValues(label, outcome).Inc()
	if d, err := strconv.ParseFloat(msg.Header.Get(fleet.HeaderDuration), 64); err == nil && d >= 0 {
		m.latency.WithLabelValues(label).Observe(d)
	}
}

// observeCalls subscribes to every operator's inbox to count function
// replies. It costs one extra delivery per reply (a broadcast to N agents
// brings N replies here too), so it runs only with Config.CallMetrics.
func (s *Service) observeCalls() (func(), error) {
	sub, err := s.fl.Subscribe(fleet.InboxRoot+".>", s.metrics.reply)
	if err != nil {
		return nil, err
	}
	// Dropping is better than slowing the connection that also answers
	// presence snapshots; drops are counted.
	_ = sub.SetPendingLimits(65536, 64<<20)
	s.metrics.sub.Store(sub)
	return func() { _ = sub.Unsubscribe() }, nil
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

// HTTPHandler serves /metrics (Prometheus text format) and /healthz (200
// "ok" while connected to the broker, 503 with the reason otherwise).
func (s *Service) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := s.healthy(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
