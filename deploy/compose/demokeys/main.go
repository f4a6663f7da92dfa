// Command demokeys makes the keys of the docker compose demo: one nkey per
// demo agent, an operator key for the host, and the preregister file that
// cc-control --preregister reads, so the demo agents are accepted from the
// first start. Existing keys are kept, so running it again changes nothing.
//
//	go run ./deploy/compose/demokeys [-out deploy/compose/demo]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/nats-io/nkeys"
)

// demoAgents are the compose file's agents: id and labels.
var demoAgents = []struct {
	ID     string
	Labels map[string]string
}{
	{"demo-1", map[string]string{"role": "web", "location": "New-Jersey"}},
	{"demo-2", map[string]string{"role": "web", "location": "New-Brunswick"}},
	{"demo-3", map[string]string{"role": "db", "location": "New-Jersey"}},
}

type machine struct {
	ID     string            `json:"id"`
	Key    string            `json:"key"`
	Labels map[string]string `json:"labels"`
}

type operator struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	Role string `json:"role"`
}

func main() {
	out := flag.String("out", "deploy/compose/demo", "output directory")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "demokeys:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	keys := filepath.Join(out, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return err
	}
	pub := func(file string) (string, error) {
		kp, err := controlsvc.LoadOrCreateSeed(filepath.Join(keys, file), nkeys.CreateUser)
		if err != nil {
			return "", err
		}
		return kp.PublicKey()
	}
	var f struct {
		Machines  []machine  `json:"machines"`
		Operators []operator `json:"operators"`
	}
	for _, a := range demoAgents {
		k, err := pub(a.ID + ".nk")
		if err != nil {
			return err
		}
		f.Machines = append(f.Machines, machine{a.ID, k, a.Labels})
	}
	k, err := pub("operator.nk")
	if err != nil {
		return err
	}
	f.Operators = append(f.Operators, operator{"compose-admin", k, "admin"})
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "preregister.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("demo keys in %s; operator key for cc-bench: %s\n", keys, filepath.Join(keys, "operator.nk"))
	return nil
}
