package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

var appsHelp = help{
	usage: `cc-bench apps ls | rm NAME |
                     add NAME --functions FN,… [--public] [--max-sessions N] [--origins URL,…] [--key-out FILE] |
                     token APP --key FILE --user U [--ttl 15m] [--claim k=v]... [--bind NKEY]`,
	about: `Manage the apps whose sessions (browsers, mobile apps, devices) may join,
and the functions those sessions may expose (admins).

  ls     the apps: admission, functions, sessions ONLINE now and the cap
  add    register an app. A signed app (the default) gets a signing key: its
         backend signs a short-lived session token for each of its users
         with it. The key's seed is shown this once (the control service
         keeps only its public half): --key-out FILE writes it to a new
         file of mode 0600 instead of printing it. --public admits anyone
         loading the app's page, without a token (rate-limited per address,
         capped by --max-sessions). --origins records the web origins
         the app's pages are served from, for people to read: it is NOT
         enforced (the broker does not tell the control service a
         connection's Origin). Browsers are held only to the broker's own
         list, cc-control --websocket-origins, for every app alike; the
         control service logs a warning when that list is empty (any page
         may connect) or leaves out an origin of the app
  rm     remove an app; its sessions are closed at once
  token  sign a session token offline with the app's key, as the app's
         backend does (for tests and scripts): --key is then the app's
         signing key FILE (from add --key-out), not your operator key;
         --bind ties the token to one session's public nkey: do bind
         whenever you know the session's key. An unbound token admits
         any key until it expires, so whoever copies it may open as many
         sessions as the app's cap allows in that user's name

A session token is a JWT signed with the app key (header alg ed25519-nkey):
{"app", "sub" (--user), "iat", "exp" (at most 24h later), "nkey" (--bind),
"claims" (--claim, at most 16)}.`,
	examples: `cc-bench apps add shop --functions latencyCheck --key-out ./shop-app.nk
cc-bench apps add demo --functions latencyCheck --public --max-sessions 500 --origins https://demo.example.com
cc-bench apps ls
cc-bench apps token shop --key ./shop-app.nk --user alice --ttl 15m --claim plan=pro --bind "$SESSION_PUBKEY"
cc-bench apps rm demo`,
}

type appsFlags struct {
	functions, origins, key, keyOut, user, bind string
	public                                      bool
	maxSessions                                 int
	ttl                                         time.Duration
	claims                                      listFlag
}

func runApps(e *env, args []string) error {
	// --key is the operator's seed file for ls, add and rm, and the
	// app's signing key for token: the flag is this command's own.
	fs := e.flagSet("apps", "key")
	var f appsFlags
	fs.StringVar(&f.key, "key", "", "your operator nkey seed `FILE` (env CC_KEY); for token: the app's signing key FILE")
	fs.StringVar(&f.functions, "functions", "", "for add: the functions its sessions may expose, `FN,…`")
	fs.BoolVar(&f.public, "public", false, "for add: admit anyone loading the app's page, without a session token")
	fs.IntVar(&f.maxSessions, "max-sessions", 0, "for add: cap the app's ONLINE sessions at `N` (0: the service's default)")
	fs.StringVar(&f.origins, "origins", "", "for add: the web origins its pages are served from, `URL,…` (shown, not enforced: browsers are held to cc-control --websocket-origins)")
	fs.StringVar(&f.keyOut, "key-out", "", "for add: write a signed app's signing key to the new `FILE` (mode 0600) instead of printing it")
	fs.StringVar(&f.user, "user", "", "for token: the user `ID` the token admits (its sub)")
	fs.DurationVar(&f.ttl, "ttl", 15*time.Minute, "for token: how long the token admits, `D`, at most 24h")
	fs.Var(&f.claims, "claim", "for token: an attribute `k=v` of the user, shown with the session (repeatable)")
	fs.StringVar(&f.bind, "bind", "", "for token: bind the token to the session public nkey `NKEY` (U…); recommended: an unbound token admits any key, as often as it is presented, until it expires")
	pos, err := e.parse(fs, args, appsHelp)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("apps needs a subcommand: ls, add, rm or token (see cc-bench apps --help)")
	}
	sub, pos := pos[0], pos[1:]
	if sub != "token" && f.key != "" {
		if err := notAPublicKey(f.key); err != nil {
			return err
		}
		e.g.key = f.key
	}
	switch sub {
	case "ls", "list":
		return needArgs(sub, pos, 0, "", func() error { return appsList(e) })
	case "add":
		if len(pos) != 1 {
			return usageErrorf("usage: cc-bench apps add NAME --functions FN,… [--public] [--max-sessions N] [--origins URL,…] [--key-out FILE]")
		}
		return appsAdd(e, pos[0], &f)
	case "rm", "remove":
		return needArgs(sub, pos, 1, "NAME", func() error { return appsRemove(e, pos[0]) })
	case "token":
		if len(pos) != 1 {
			return usageErrorf("usage: cc-bench apps token APP --key FILE --user U [--ttl 15m] [--claim k=v]... [--bind NKEY]")
		}
		return appsToken(e, pos[0], &f)
	}
	return usageErrorf("unknown apps subcommand %q; want ls, add, rm or token", sub)
}

// commaList splits a comma-separated flag value, dropping empty items.
func commaList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func appsAdd(e *env, name string, f *appsFlags) error {
	if err := fleet.ValidateName("app name", name); err != nil {
		return usageErrorf("%v", err)
	}
	fns := commaList(f.functions)
	if len(fns) == 0 {
		return usageErrorf("--functions FN,… is required: the functions the app's sessions may expose, e.g. --functions latencyCheck")
	}
	for _, fn := range fns {
		if err := fleet.ValidateName("function name", fn); err != nil {
			return usageErrorf("--functions: %v", err)
		}
	}
	if f.maxSessions < 0 {
		return usageErrorf("--max-sessions %d: want 0 (the service's default) or more", f.maxSessions)
	}
	if f.keyOut != "" {
		if f.public {
			return usageErrorf("--key-out writes a signed app's signing key; a --public app has none")
		}
		// Refuse before the app exists: its seed is shown only once.
		if _, err := os.Lstat(f.keyOut); err == nil {
			return usageErrorf("--key-out %s exists already; name a new file (a signing key is never written over another file)", f.keyOut)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--key-out %s: %w", f.keyOut, err)
		}
	}
	req := fleet.AppRequest{Name: name, Functions: fns, Public: f.public, MaxSessions: f.maxSessions, Origins: commaList(f.origins)}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		created, err := c.AppsAdd(ctx, req)
		if err != nil {
			return err
		}
		seed := created.Seed
		if seed != "" && f.keyOut != "" {
			if err := keyfile.Create(f.keyOut, []byte(seed+"\n")); err != nil {
				return fmt.Errorf("app %s was added, but its signing key could not be written (%w); it is not shown again: "+
					"remove the app with cc-bench apps rm %s and add it again", name, err, name)
			}
			created.Seed = ""
		}
		if e.g.json {
			if err := jsonLine(e.stdout, created); err != nil {
				return err
			}
		} else if err := appText(e, created.App); err != nil {
			return err
		}
		switch {
		case seed != "" && f.keyOut != "":
			return printf(e.stderr, "the app's signing key is in %s (mode 0600): give it to the app's backend only; sign a test token with:\n"+
				"  cc-bench apps token %s --key %s --user USER\n", f.keyOut, name, f.keyOut)
		case seed != "" && !e.g.json:
			if err := printf(e.stdout, "signing key (seed): %s\n", seed); err != nil {
				return err
			}
			fallthrough
		case seed != "":
			return printf(e.stderr, "WARNING: this is the app's signing key, shown this once (the control service keeps only its public half).\n"+
				"  Whoever holds it can admit sessions as any user of %s: store it where only the app's backend reads it\n"+
				"  (--key-out FILE writes it to a file of mode 0600 instead).\n", name)
		}
		return nil
	})
}

// appText prints an app for a person.
func appText(e *env, a fleet.App) error {
	max := "default"
	if a.MaxSessions > 0 {
		max = fmt.Sprint(a.MaxSessions)
	}
	if err := printf(e.stdout, "app %s (%s): functions %s; max sessions %s; origins %s\n", a.Name, a.Admission,
		strings.Join(a.Functions, ","), max, dash(strings.Join(a.Origins, ","))); err != nil {
		return err
	}
	if a.Key != "" {
		return printf(e.stdout, "public key %s\n", a.Key)
	}
	return nil
}

func appsList(e *env) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		apps, err := c.AppsList(ctx)
		if err != nil || e.g.json {
			return jsonLines(e, apps, err)
		}
		if len(apps) == 0 {
			fmt.Fprintln(e.stderr, "no app is registered; add one with: cc-bench apps add NAME --functions latencyCheck")
			return nil
		}
		t := newTable(e.stdout, "NAME", "ADMISSION", "FUNCTIONS", "ONLINE", "MAX", "ORIGINS")
		for _, a := range apps {
			max := "-"
			if a.MaxSessions > 0 {
				max = fmt.Sprint(a.MaxSessions)
			}
			t.row(a.Name, a.Admission, strings.Join(a.Functions, ","), fmt.Sprint(a.Online), max, dash(strings.Join(a.Origins, ",")))
		}
		return t.flush()
	})
}

func appsRemove(e *env, name string) error {
	if err := fleet.ValidateName("app name", name); err != nil {
		return usageErrorf("%v", err)
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		r, err := c.AppsRemove(ctx, name)
		return e.done(r, err, "removed app %s (closed %d session%s)", name, r.Closed, plural(r.Closed))
	})
}

// tokenLine is apps token --json.
type tokenLine struct {
	Token   string    `json:"token"`
	App     string    `json:"app"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// appsToken signs a session token offline; it needs no broker.
func appsToken(e *env, app string, f *appsFlags) error {
	if err := fleet.ValidateName("app name", app); err != nil {
		return usageErrorf("%v", err)
	}
	switch {
	case f.key == "":
		return usageErrorf("--key FILE is required: the app's signing key (written by cc-bench apps add --key-out FILE)")
	case f.user == "":
		return usageErrorf("--user ID is required: the app's user the token admits")
	case len(f.user) > fleet.MaxIDLen:
		return usageErrorf("--user is %d bytes; at most %d are allowed", len(f.user), fleet.MaxIDLen)
	case f.ttl <= 0 || f.ttl > fleet.MaxSessionTokenTTL:
		return usageErrorf("--ttl %s: want more than 0 and at most %s", f.ttl, fleet.MaxSessionTokenTTL)
	case f.ttl < time.Second:
		return usageErrorf("--ttl %s: a token's times are in whole seconds; give at least 1s", f.ttl)
	}
	if f.bind != "" && !nkeys.IsValidPublicUserKey(f.bind) {
		return usageErrorf("--bind %q is not a public user nkey (U… and 56 characters): give the session's public key", f.bind)
	}
	claims, err := keyValues("--claim", f.claims)
	if err != nil {
		return err
	}
	if len(claims) > fleet.MaxSessionClaims {
		return usageErrorf("%d --claim given; at most %d are allowed", len(claims), fleet.MaxSessionClaims)
	}
	kp, err := keyfile.ReadSeed("app signing key", f.key)
	if err != nil {
		return err
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return fmt.Errorf("%s does not hold an app signing key (a seed starting with SA, as cc-bench apps add --key-out writes it); "+
			"is it your operator key?", f.key)
	}
	t := now().Truncate(time.Second)
	c := fleet.SessionTokenClaims{App: app, Subject: f.user, IssuedAt: t.Unix(), Expires: t.Add(f.ttl).Unix(), Key: f.bind, Claims: claims}
	tok, err := fleet.EncodeSessionToken(c, kp.Sign)
	if err != nil {
		return err
	}
	// What the control service will check: refuse here what it would.
	if _, err := fleet.ParseSessionToken(tok, pub, t); err != nil {
		return usageErrorf("%v", err)
	}
	if e.g.json {
		return jsonLine(e.stdout, tokenLine{Token: tok, App: app, User: f.user, Expires: time.Unix(c.Expires, 0).UTC()})
	}
	return printf(e.stdout, "%s\n", tok)
}
