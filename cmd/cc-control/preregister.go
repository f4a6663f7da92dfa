package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// preregisterFile is the --preregister file: machines and operators whose
// public keys were collected beforehand (provisioning, the compose demo).
type preregisterFile struct {
	Machines  []fleet.MachineRequest `json:"machines"`
	Operators []struct {
		Name string `json:"name"`
		Key  string `json:"key"`
		Role string `json:"role"`
	} `json:"operators"`
}

// preregister registers what path lists once the registry is open, before
// the control service answers anyone. Machines missing, or recorded with another key or labels,
// are (re)registered; an operator name already recorded with another key is
// an error, never silently replaced.
// preregisterFunc is what the control service runs once its registry is
// open (nil without --preregister).
func preregisterFunc(path string, log *slog.Logger) func(*controlsvc.Registry) error {
	if path == "" {
		return nil
	}
	return func(reg *controlsvc.Registry) error { return preregister(reg, path, log) }
}

func preregister(reg *controlsvc.Registry, path string, log *slog.Logger) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--preregister: %w", err)
	}
	var f preregisterFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("--preregister %s: %w (want {\"machines\":[{\"id\",\"key\",\"labels\",\"site\"}],\"operators\":[{\"name\",\"key\",\"role\"}]})", path, err)
	}
	var changed []fleet.MachineRequest
	for _, m := range f.Machines {
		if old, ok := reg.Machine(m.ID); ok && old.Key == m.Key && maps.Equal(old.Labels, m.Labels) && old.Site == m.Site {
			continue
		}
		changed = append(changed, fleet.MachineRequest{ID: m.ID, Key: m.Key, Labels: m.Labels, Site: m.Site})
	}
	if len(changed) > 0 {
		if _, err := reg.AddMachines(changed, "cc-control --preregister"); err != nil {
			return fmt.Errorf("--preregister %s: %w", path, err)
		}
	}
	for _, o := range f.Operators {
		if old, ok := reg.Operator(o.Name); ok {
			if old.Key != o.Key {
				return fmt.Errorf("--preregister %s: operator %s is registered with key %s, not %s; remove it first (cc-bench operators rm %s)", path, o.Name, old.Key, o.Key, o.Name)
			}
			continue
		}
		if _, err := reg.AddOperator(o.Name, o.Key, o.Role); err != nil {
			return fmt.Errorf("--preregister %s: %w", path, err)
		}
	}
	log.Info("preregistered", "file", path, "machines", len(f.Machines), "changed", len(changed), "operators", len(f.Operators))
	return nil
}
