package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// errHelp is returned after a command printed its --help.
var errHelp = flag.ErrHelp

// help is a command's --help text.
type help struct {
	usage    string // e.g. "cc-bench call FUNCTION [flags]"
	about    string // what it does, a paragraph or two
	examples string // one per line
}

// flagSet is a command's flags: the global ones and its own.
type flagSet struct {
	*flag.FlagSet
	global map[string]bool
}

// flagSet returns a flag set holding the global flags except those named in
// except (a command that gives one of their names another meaning); a
// command adds its own.
func (e *env) flagSet(name string, except ...string) *flagSet {
	fs := &flagSet{flag.NewFlagSet(name, flag.ContinueOnError), map[string]bool{}}
	fs.SetOutput(io.Discard)
	skip := map[string]bool{}
	for _, n := range except {
		skip[n] = true
	}
	add := func(n string, def func()) {
		if !skip[n] {
			def()
			fs.global[n] = true
		}
	}
	add("server", func() { fs.StringVar(&e.g.server, "server", e.g.server, "broker `URL` (env CC_SERVER)") })
	add("key", func() { fs.StringVar(&e.g.key, "key", e.g.key, "the operator's nkey seed `FILE` (env CC_KEY)") })
	add("json", func() { fs.BoolVar(&e.g.json, "json", e.g.json, "print JSON Lines, one object per line") })
	add("tls-ca", func() {
		fs.StringVar(&e.g.tlsCA, "tls-ca", e.g.tlsCA, "verify the broker against the CA certificate in PEM `FILE`; turns TLS on (env CC_TLS_CA)")
	})
	add("tls-cert", func() {
		fs.StringVar(&e.g.tlsCert, "tls-cert", e.g.tlsCert, "client certificate PEM `FILE`, for a broker that requires mutual TLS (env CC_TLS_CERT)")
	})
	add("tls-key", func() {
		fs.StringVar(&e.g.tlsKey, "tls-key", e.g.tlsKey, "private key PEM `FILE` of --tls-cert (env CC_TLS_KEY)")
	})
	add("allow-plaintext", func() {
		fs.BoolVar(&e.g.allowPlaintext, "allow-plaintext", e.g.allowPlaintext,
			"allow plain text to a broker not on this host, on a network you trust (env CC_ALLOW_PLAINTEXT=1)")
	})
	add("timeout", func() {
		fs.Var((*timeoutFlag)(&e.g.timeout), "timeout", "wait at most `D` for replies, e.g. 10s")
	})
	return fs
}

// parse parses a command's args, flags and positional arguments in any
// order ("--" ends the flags), and returns the positional ones. On --help
// it prints h to stdout and returns errHelp; a bad flag is a usage error.
func (e *env) parse(fs *flagSet, args []string, h help) ([]string, error) {
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			printHelp(e.stdout, fs, h)
			return nil, errHelp
		}
		if err != nil {
			return nil, usageErrorf("%s: %v (see cc-bench %s --help)", fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func printHelp(w io.Writer, fs *flagSet, h help) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", h.usage, strings.TrimSpace(h.about))
	own := false
	fs.VisitAll(func(f *flag.Flag) { own = own || !fs.global[f.Name] })
	if own {
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, fs, false)
	}
	fmt.Fprint(w, "\nGlobal flags:\n")
	printFlags(w, fs, true)
	if h.examples != "" {
		fmt.Fprint(w, "\nExamples:\n")
		for _, line := range strings.Split(strings.TrimSpace(h.examples), "\n") {
			fmt.Fprintf(w, "  %s\n", strings.TrimSpace(line))
		}
	}
}

// printFlags lists the global flags, or the others, GNU style.
func printFlags(w io.Writer, fs *flagSet, global bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if fs.global[f.Name] != global {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if name != "" {
			left += " " + name
		}
		if def := f.DefValue; def != "" && def != "false" && def != "[]" && !(global && f.Name == "key") {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintf(w, "  %-22s %s\n", left, usage)
	})
}

// timeoutFlag is --timeout: a duration above 0 (a deadline already past
// would fail every command, and a negative one reads as a typo).
type timeoutFlag time.Duration

func (d *timeoutFlag) String() string { return time.Duration(*d).String() }

func (d *timeoutFlag) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || v <= 0 {
		return fmt.Errorf("want a duration above 0 such as 500ms, 10s or 2m")
	}
	*d = timeoutFlag(v)
	return nil
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// keyValues parses k=v pairs; what names them in errors ("--label").
func keyValues(what string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, usageErrorf("%s %q: want key=value", what, p)
		}
		m[strings.TrimSpace(k)] = v
	}
	return m, nil
}
