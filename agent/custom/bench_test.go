package custom

import (
	"context"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
)

func BenchmarkCustomFunctionEcho(b *testing.B) {
	fn := NewFunction(Definition{Name: "echo", Command: []string{"/bin/echo", "{}"}, Timeout: Duration(5 * time.Second),
		Output: OutputAuto, MaxOutputBytes: DefaultOutputBytes, MaxConcurrent: 1}, &functions.Env{})
	ctx := context.Background()
	for b.Loop() {
		if _, err := fn.Call(ctx, functions.Args{}); err != nil {
			b.Fatal(err)
		}
	}
}
