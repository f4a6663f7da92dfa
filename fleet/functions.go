package fleet

// Built-in function names: every agent serves these (agent/functions),
// and the control service lets the viewer role call the read-only ones.
const (
	FnMachineInfo         = "machine-info"
	FnSwList              = "sw-list"
	FnInstalledSecPatches = "installed-sec-patches"
	FnCurrentCPUMemDiskIO = "current-cpu-mem-diskio"
	FnCurrentLoad         = "current-load"
)

// BuiltinFunction is what the wire contract says of a built-in function.
type BuiltinFunction struct {
	Name string
	// ReadOnly says the function changes nothing on the machine; only
	// read-only functions are granted to the viewer role by default.
	ReadOnly bool
}

// BuiltinFunctions lists every built-in function, the one list the
// agent's function specs and the control service's default viewer
// functions follow (a test in agent/functions checks the specs).
var BuiltinFunctions = []BuiltinFunction{
	{Name: FnMachineInfo, ReadOnly: true},
	{Name: FnSwList, ReadOnly: true},
	{Name: FnInstalledSecPatches, ReadOnly: true},
	{Name: FnCurrentCPUMemDiskIO, ReadOnly: true},
	{Name: FnCurrentLoad, ReadOnly: true},
}

// Builtin returns the built-in function called name.
func Builtin(name string) (BuiltinFunction, bool) {
	for _, f := range BuiltinFunctions {
		if f.Name == name {
			return f, true
		}
	}
	return BuiltinFunction{}, false
}

// ReadOnlyBuiltins returns the names of the read-only built-ins, in
// [BuiltinFunctions] order: a new slice the caller may change.
func ReadOnlyBuiltins() []string {
	var out []string
	for _, f := range BuiltinFunctions {
		if f.ReadOnly {
			out = append(out, f.Name)
		}
	}
	return out
}

// ReadOnlyBuiltin reports whether name is a read-only built-in function.
func ReadOnlyBuiltin(name string) bool {
	f, ok := Builtin(name)
	return ok && f.ReadOnly
}
