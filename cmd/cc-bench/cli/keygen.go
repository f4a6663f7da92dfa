package cli

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

var keygenHelp = help{
	usage: "cc-bench keygen --out FILE [--type operator|agent] [--force] [--json]",
	about: `Make a new nkey: write its seed to FILE (mode 0600, readable by you
alone) and print its public key (U…), the one to register. An operator's
key is registered with cc-bench operators add NAME --pubkey KEY; an
agent's with cc-bench machines add ID --pubkey KEY (or run cc-agent --key
FILE and accept it from pending). Both are user nkeys: --type only says
what the key is for in the hint printed. The seed is never printed.

An existing FILE is never overwritten unless --force (the key it held is
lost: what was registered with it can no longer connect). --json prints
{"public_key", "file", "type"}.`,
	examples: `cc-bench keygen --out ~/.cc/alice.nk
cc-bench keygen --out /etc/cc-agent/agent.nk --type agent`,
}

func runKeygen(e *env, args []string) error {
	fs := e.flagSet("keygen", "key")
	out := fs.String("out", "", "write the new seed to `FILE` (mode 0600)")
	kind := fs.String("type", "operator", "what the key is for: `operator` or agent")
	force := fs.Bool("force", false, "replace FILE if it exists (the key it held is lost)")
	pos, err := e.parse(fs, args, keygenHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("keygen takes no arguments, got %q; the file is given with --out FILE", pos)
	}
	if *out == "" {
		return usageErrorf("keygen needs --out FILE: where to write the seed (it is never printed)")
	}
	if *kind != "operator" && *kind != "agent" {
		return usageErrorf("--type %q: want operator or agent", *kind)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("make a key: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return err
	}
	data := append(seed, '\n')
	if *force {
		err = keyfile.WriteAtomic(*out, data, 0o600)
	} else {
		err = keyfile.Create(*out, data)
	}
	if errors.Is(err, iofs.ErrExist) {
		return fmt.Errorf("%s exists: nothing was written (its key may be registered; --force replaces it, and that key is lost)", *out)
	}
	if err != nil {
		return err
	}
	if e.g.json {
		return jsonLine(e.stdout, map[string]string{"public_key": pub, "file": *out, "type": *kind})
	}
	if err := printf(e.stdout, "%s\n", pub); err != nil {
		return err
	}
	hint := fmt.Sprintf("register it with: cc-bench operators add NAME --pubkey %s --role viewer|admin; then use: cc-bench --key %s", pub, *out)
	if *kind == "agent" {
		hint = fmt.Sprintf("run the agent with: cc-agent --key %s; register it with: cc-bench machines add ID --pubkey %s (or accept it from pending)", *out, pub)
	}
	fmt.Fprintf(e.stderr, "wrote the %s seed to %s (mode 0600); %s\n", *kind, *out, strings.TrimSpace(hint))
	return nil
}
