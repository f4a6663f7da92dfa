package fleet

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestFunctionInfosRoundTrip(t *testing.T) {
	fns := []FunctionInfo{
		{Name: "current-load", ReadOnly: true, Help: "load averages"},
		{Name: "disk-usage", Help: "space used", Args: []FunctionArg{{Name: "path", Type: "string", Required: true}, {Name: "limit", Type: "int"}}},
	}
	got, err := DecodeFunctionInfos(EncodeFunctionInfos(fns))
	if err != nil || !reflect.DeepEqual(got, fns) {
		t.Fatalf("round trip: %v %+v", err, got)
	}
}

// An agent with many functions, or long help texts, still fits its
// description within the bound: the help goes first, then the
// arguments, then the functions that do not fit.
func TestEncodeFunctionInfosBounded(t *testing.T) {
	long := strings.Repeat("h", 4000)
	var fns []FunctionInfo
	for i := range 20 {
		fns = append(fns, FunctionInfo{Name: fmt.Sprintf("f%02d", i), ReadOnly: true, Help: long, Args: []FunctionArg{{Name: "a", Type: "int", Help: long}}})
	}
	s := EncodeFunctionInfos(fns)
	got, err := DecodeFunctionInfos(s)
	if err != nil || len(s) > MaxFunctionInfosBytes || len(got) != 20 || got[0].Help != "" || len(got[0].Args) != 1 || !got[0].ReadOnly {
		t.Fatalf("help dropped, args kept: %d bytes, %v, %+v", len(s), err, got[:1])
	}
	fns = nil
	for i := range 2000 {
		fns = append(fns, FunctionInfo{Name: fmt.Sprintf("function-with-a-long-name-%04d", i), Args: []FunctionArg{{Name: "some-argument", Type: "string"}}})
	}
	s = EncodeFunctionInfos(fns)
	got, err = DecodeFunctionInfos(s)
	if err != nil || len(s) > MaxFunctionInfosBytes || len(got) == 0 || len(got) > MaxFunctionInfos || got[0].Args != nil {
		t.Fatalf("cut to fit: %d bytes, %v, %d functions", len(s), err, len(got))
	}
}

func TestDecodeFunctionInfosRefuses(t *testing.T) {
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"name":"f","read_only":true},`, MaxFunctionInfos+1), ",") + "]"
	manyArgs := `[{"name":"f","read_only":true,"args":[` + strings.TrimSuffix(strings.Repeat(`{"name":"a","type":"int"},`, MaxFunctionArgs+1), ",") + `]}]`
	for _, tt := range []struct{ name, in, want string }{
		{"not JSON", `{`, "not a JSON array"},
		{"an object", `{"name":"f"}`, "not a JSON array"},
		{"a bad name", `[{"name":"a b","read_only":true}]`, `function name "a b"`},
		{"an empty name", `[{"read_only":true}]`, "function name is empty"},
		{"a bad argument", `[{"name":"f","args":[{"name":"x\u001b[2J","type":"string"}]}]`, "argument name"},
		{"too many functions", many, "at most 512"},
		{"too many arguments", manyArgs, "at most 64"},
		{"too large", strings.Repeat(" ", MaxFunctionInfosBytes+1), "bytes; at most"},
	} {
		if _, err := DecodeFunctionInfos(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}
