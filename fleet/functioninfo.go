package fleet

import (
	"encoding/json"
	"fmt"
)

// An agent describes the functions it serves in its micro discovery
// INFO answer ($SRV.INFO.cc-agent), in two metadata entries: "functions",
// their names joined by commas (what every agent has always sent), and
// [AgentFunctionsMeta], a JSON array of [FunctionInfo] encoded by
// [EncodeFunctionInfos]. cc-bench functions reads both (an agent without
// the second is described by names only).
//
// Like every discovery answer, it is what an agent says of itself, and
// no permission follows from it. On the shared [DiscoveryInbox] any agent
// may answer, so the "machine" an answer names is only its claim; cc-bench
// functions asks each machine on its [MachineDiscoveryInbox] and
// attributes each answer by that subject instead.
const (
	AgentFunctionNamesMeta = "functions"
	AgentFunctionsMeta     = "function_specs"
)

// Bounds of an agent's [AgentFunctionsMeta]: its encoded size, and what a
// workbench accepts of one agent.
const (
	MaxFunctionInfosBytes = 32 << 10
	MaxFunctionInfos      = 512
	MaxFunctionArgs       = 64
)

// FunctionInfo describes one function an agent serves: its name, whether
// it changes nothing on the machine, what it does, and its arguments.
type FunctionInfo struct {
	Name     string        `json:"name"`
	ReadOnly bool          `json:"read_only"`
	Help     string        `json:"help,omitempty"`
	Args     []FunctionArg `json:"args,omitempty"`
}

// FunctionArg is one typed argument of a [FunctionInfo]: its type is
// string, int, float or bool.
type FunctionArg struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Help     string `json:"help,omitempty"`
	Required bool   `json:"required,omitempty"`
}

// EncodeFunctionInfos encodes fns as the [AgentFunctionsMeta] entry,
// within [MaxFunctionInfosBytes]: when they do not fit, the help texts are
// left out, then the arguments, then the functions past what fits (a
// workbench still has every name from [AgentFunctionNamesMeta]).
func EncodeFunctionInfos(fns []FunctionInfo) string {
	if len(fns) > MaxFunctionInfos {
		fns = fns[:MaxFunctionInfos]
	}
	enc := func(v []FunctionInfo) string {
		b, err := json.Marshal(v)
		if err != nil {
			return "[]"
		}
		return string(b)
	}
	if s := enc(fns); len(s) <= MaxFunctionInfosBytes {
		return s
	}
	bare := make([]FunctionInfo, len(fns))
	for i, f := range fns {
		bare[i] = FunctionInfo{Name: f.Name, ReadOnly: f.ReadOnly}
		for _, a := range f.Args {
			bare[i].Args = append(bare[i].Args, FunctionArg{Name: a.Name, Type: a.Type, Required: a.Required})
		}
	}
	if s := enc(bare); len(s) <= MaxFunctionInfosBytes {
		return s
	}
	for i := range bare {
		bare[i].Args = nil
	}
	for n := len(bare); n > 0; n-- {
		if s := enc(bare[:n]); len(s) <= MaxFunctionInfosBytes {
			return s
		}
	}
	return "[]"
}

// DecodeFunctionInfos reads an agent's [AgentFunctionsMeta] entry. It
// refuses one larger than [MaxFunctionInfosBytes], with more than
// [MaxFunctionInfos] functions or [MaxFunctionArgs] arguments to one, or
// naming a function or argument not as [ValidateName] wants: the error
// says which.
func DecodeFunctionInfos(s string) ([]FunctionInfo, error) {
	if len(s) > MaxFunctionInfosBytes {
		return nil, fmt.Errorf("%s is %d bytes; at most %d are allowed", AgentFunctionsMeta, len(s), MaxFunctionInfosBytes)
	}
	var fns []FunctionInfo
	if err := json.Unmarshal([]byte(s), &fns); err != nil {
		return nil, fmt.Errorf("%s is not a JSON array of functions: %w", AgentFunctionsMeta, err)
	}
	if len(fns) > MaxFunctionInfos {
		return nil, fmt.Errorf("%s lists %d functions; at most %d are allowed", AgentFunctionsMeta, len(fns), MaxFunctionInfos)
	}
	for _, f := range fns {
		if err := ValidateName("function name", f.Name); err != nil {
			return nil, fmt.Errorf("%s: %w", AgentFunctionsMeta, err)
		}
		if len(f.Args) > MaxFunctionArgs {
			return nil, fmt.Errorf("%s: function %s has %d arguments; at most %d are allowed", AgentFunctionsMeta, f.Name, len(f.Args), MaxFunctionArgs)
		}
		for _, a := range f.Args {
			if err := ValidateName("argument name", a.Name); err != nil {
				return nil, fmt.Errorf("%s: function %s: %w", AgentFunctionsMeta, f.Name, err)
			}
		}
	}
	return fns, nil
}
