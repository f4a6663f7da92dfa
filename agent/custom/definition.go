// Package custom serves operators' own functions: JSON definitions in the
// agent's functions directory (cc-agent --functions-dir, docs/FUNCTIONS.md)
// that run a command without a shell. [LoadDefinitions] reads and
// validates them (cc-control uses it too, for [ViewerFunctions]);
// [Loader] serves them on a [functions.Set] beside the built-ins and
// reloads them when the directory changes; [NewFunction] runs one.
//
// custom imports functions (for Spec, Env and Set), never the reverse:
// the agent composes the two (agent.Agent.Start).
package custom

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// Limits and defaults of operators' own functions (see [Definition]).
const (
	DefaultTimeout       = 30 * time.Second
	DefaultOutputBytes   = 1 << 20
	MaxOutputBytes       = 16 << 20
	DefaultMaxConcurrent = 4
	// DefaultFunctionsDir is where cc-agent looks for definitions.
	DefaultFunctionsDir = "/etc/cc-agent/functions.d"
	// maxDefinitionFile bounds one definition file.
	maxDefinitionFile = 1 << 20
)

// Roles a definition may require.
const (
	RoleAdmin  = "admin"
	RoleViewer = "viewer"
)

// Output modes of a definition.
const (
	OutputAuto = "auto" // a JSON object or array passes through; anything else is wrapped
	OutputJSON = "json" // stdout must be JSON; it passes through
	OutputText = "text" // stdout is always wrapped as {"stdout","stderr","exit_code"}
)

// Definition is an operator's own function, one JSON file in the agent's
// functions directory (cc-agent --functions-dir). docs/FUNCTIONS.md
// describes the format. The agent runs Command without a shell; each
// "{{name}}" in an element is replaced by the argument's value, and the
// element stays one argument whatever the value holds.
type Definition struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Command     []string `json:"command"`
	Args        []DefArg `json:"args,omitempty"`
	// Timeout is a Go duration ("10s") or a number of seconds.
	Timeout Duration `json:"timeout,omitzero"`
	// Role is who may call it: "admin" (the default) or "viewer". Agents
	// cannot see a caller's role; the control service enforces it through
	// the permissions it issues, learning viewer functions from the same
	// files through [LoadDefinitions].
	Role string `json:"role,omitempty"`
	// ReadOnly says the command changes nothing; role "viewer" requires it.
	ReadOnly       bool              `json:"read_only"`
	Output         string            `json:"output,omitempty"`
	MaxOutputBytes int64             `json:"max_output_bytes,omitempty"`
	MaxConcurrent  int               `json:"max_concurrent,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Dir            string            `json:"dir,omitempty"`

	// File is where the definition was read from.
	File string `json:"-"`
}

// DefArg is a typed argument of a definition: an [Arg] plus an optional
// regular expression a string value must match in full.
type DefArg struct {
	functions.Arg
	Pattern string `json:"pattern,omitempty"`
}

// Duration is a time.Duration read from JSON as "1m30s" or as seconds.
type Duration time.Duration

// UnmarshalJSON accepts a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return &durationError{err}
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return &durationError{fmt.Errorf("want a duration such as \"10s\" or a number of seconds, got %s", b)}
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration as a string ("10s").
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// durationError marks a bad duration, which encoding/json reports without
// the field it belongs to; "timeout" is the only duration field.
type durationError struct{ err error }

func (e *durationError) Error() string { return e.err.Error() }

// DefinitionError is a definition file that could not be loaded: it names
// the file and, where one is at fault, the field.
type DefinitionError struct {
	File  string
	Field string
	Err   error
}

func (e *DefinitionError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("function definition %s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("function definition %s: field %q: %v", e.File, e.Field, e.Err)
}

func (e *DefinitionError) Unwrap() error { return e.Err }

// LoadDefinitions reads every *.json file of dir (hidden files and other
// names are skipped), sorted by file name. A file that cannot be read or
// fails validation is reported in errs, each a [*DefinitionError] naming
// file and field, and left out; the others load. A name already defined by
// an earlier file, or by a built-in function, is an error for the later
// file. A missing dir gives no definitions and no error.
//
// The control service uses it too, to learn which custom functions the
// viewer role may call ([ViewerFunctions]).
func LoadDefinitions(dir string) (defs []Definition, errs []error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{&DefinitionError{File: dir, Err: err}}
	}
	seen := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || filepath.Ext(name) != ".json" || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, name)
		d, err := ReadDefinition(path)
		if err == nil {
			if prev, dup := seen[d.Name]; dup {
				err = &DefinitionError{File: path, Field: "name", Err: fmt.Errorf("%q is already defined in %s", d.Name, prev)}
			} else if functions.IsBuiltin(d.Name) {
				err = &DefinitionError{File: path, Field: "name", Err: fmt.Errorf("%q is a built-in function", d.Name)}
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		seen[d.Name] = path
		defs = append(defs, d)
	}
	return defs, errs
}

// ViewerFunctions lists the names of the definitions the viewer role may
// call, sorted.
func ViewerFunctions(defs []Definition) []string {
	var out []string
	for _, d := range defs {
		if d.Role == RoleViewer {
			out = append(out, d.Name)
		}
	}
	sort.Strings(out)
	return out
}

// ReadDefinition reads and validates one definition file. Unknown fields
// are errors, so a misspelt "timeout" is not silently ignored.
func ReadDefinition(path string) (Definition, error) {
	fail := func(field string, err error) (Definition, error) {
		return Definition{}, &DefinitionError{File: path, Field: field, Err: err}
	}
	st, err := os.Stat(path)
	if err != nil {
		return fail("", err)
	}
	if st.Size() > maxDefinitionFile {
		return fail("", fmt.Errorf("file is %d bytes; at most %d are allowed", st.Size(), maxDefinitionFile))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fail("", err)
	}
	var d Definition
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		var te *json.UnmarshalTypeError
		var de *durationError
		if errors.As(err, &de) {
			return fail("timeout", de.err)
		}
		if errors.As(err, &te) && te.Field != "" {
			return fail(te.Field, fmt.Errorf("want %s, got JSON %s", te.Type, te.Value))
		}
		return fail("", fmt.Errorf("not a JSON definition: %w", err))
	}
	if dec.More() {
		return fail("", errors.New("more than one JSON value; write one definition per file"))
	}
	d.File = path
	if field, err := d.validate(); err != nil {
		return fail(field, err)
	}
	return d, nil
}

// placeholder matches "{{name}}" in a command element.
var placeholder = regexp.MustCompile(`\{\{\s*([^{}]*?)\s*\}\}`)

// validate checks d and fills in defaults; it returns the faulty field.
func (d *Definition) validate() (string, error) {
	if err := fleet.ValidateName("function name", d.Name); err != nil {
		return "name", err
	}
	if len(d.Command) == 0 || d.Command[0] == "" {
		return "command", errors.New(`want the program and its arguments as a list, e.g. ["/usr/bin/df", "-h", "{{path}}"]`)
	}
	if placeholder.MatchString(d.Command[0]) {
		return "command[0]", errors.New("the program itself cannot come from an argument")
	}
	args := map[string]bool{}
	for i, a := range d.Args {
		field := fmt.Sprintf("args[%d]", i)
		if err := fleet.ValidateName("argument name", a.Name); err != nil {
			return field + ".name", err
		}
		if args[a.Name] {
			return field + ".name", fmt.Errorf("argument %q is declared twice", a.Name)
		}
		args[a.Name] = true
		switch a.Type {
		case functions.TypeString, functions.TypeInt, functions.TypeFloat, functions.TypeBool:
		case "":
			d.Args[i].Type = functions.TypeString
		default:
			return field + ".type", fmt.Errorf("unknown type %q: want string, int, float or bool", a.Type)
		}
		if a.Pattern != "" {
			if _, err := regexp.Compile(a.Pattern); err != nil {
				return field + ".pattern", err
			}
		}
	}
	for i, el := range d.Command {
		for _, m := range placeholder.FindAllStringSubmatch(el, -1) {
			if !args[m[1]] {
				return fmt.Sprintf("command[%d]", i), fmt.Errorf("placeholder {{%s}} names no declared argument", m[1])
			}
		}
	}
	return d.defaults()
}

// defaults fills in the optional fields and checks their ranges.
func (d *Definition) defaults() (string, error) {
	switch {
	case d.Timeout < 0:
		return "timeout", errors.New("must not be negative")
	case d.Timeout == 0:
		d.Timeout = Duration(DefaultTimeout)
	}
	switch d.Role {
	case "":
		d.Role = RoleAdmin
	case RoleAdmin:
	case RoleViewer:
		if !d.ReadOnly {
			return "role", errors.New(`role "viewer" needs "read_only": true`)
		}
	default:
		return "role", fmt.Errorf("unknown role %q: want admin or viewer", d.Role)
	}
	switch d.Output {
	case "":
		d.Output = OutputAuto
	case OutputAuto, OutputJSON, OutputText:
	default:
		return "output", fmt.Errorf("unknown output %q: want auto, json or text", d.Output)
	}
	switch {
	case d.MaxOutputBytes < 0 || d.MaxOutputBytes > MaxOutputBytes:
		return "max_output_bytes", fmt.Errorf("want 1 to %d", MaxOutputBytes)
	case d.MaxOutputBytes == 0:
		d.MaxOutputBytes = DefaultOutputBytes
	}
	switch {
	case d.MaxConcurrent < 0:
		return "max_concurrent", errors.New("must not be negative")
	case d.MaxConcurrent == 0:
		d.MaxConcurrent = DefaultMaxConcurrent
	}
	for k := range d.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return "env", fmt.Errorf("bad variable name %q", k)
		}
	}
	return "", nil
}

// Spec is the function's spec as callers see it.
func (d *Definition) Spec() functions.Spec {
	s := functions.Spec{Name: d.Name, Help: d.Description, ReadOnly: d.ReadOnly}
	for _, a := range d.Args {
		s.Args = append(s.Args, a.Arg)
	}
	return s
}
