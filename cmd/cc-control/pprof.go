package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// servePprof serves Go's profiler (/debug/pprof/) on addr, which must be
// a loopback address: a profile shows the process's memory and code
// paths, so it is for someone already on this machine.
func servePprof(addr string, log *slog.Logger) (url string, stop func(), err error) {
	if err := checkPprofAddr(addr); err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--pprof-listen: %w", err)
	}
	// "localhost" is a name: what it was bound to must be loopback too.
	if ta, ok := l.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		l.Close()
		return "", nil, fmt.Errorf("--pprof-listen %q: bound to %s, not a loopback address: give 127.0.0.1 or ::1", addr, l.Addr())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	srv := &http.Server{Handler: loopbackHostOnly(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "error", err)
		}
	}()
	url = "http://" + l.Addr().String() + "/debug/pprof/"
	log.Info("serving the Go profiler", "url", url)
	return url, func() { _ = srv.Close() }, nil
}

// checkPprofAddr refuses a --pprof-listen address that is not HOST:PORT
// with a loopback HOST, before anything starts.
func checkPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-listen %q: want HOST:PORT on loopback, e.g. 127.0.0.1:6060", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--pprof-listen %q: the profiler is served on loopback only (127.0.0.1 or ::1)", addr)
	}
	return nil
}

// loopbackHostOnly refuses a request whose Host is not a loopback name
// or address: a web page the machine's browser opened may point a name
// of its own at 127.0.0.1 (DNS rebinding) and would otherwise read the
// profiler as a same-origin page.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "the profiler answers only requests for a loopback host (127.0.0.1, ::1, localhost)", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}
