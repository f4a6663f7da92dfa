package functions_test

import (
	"context"
	"fmt"

	"github.com/commandcontrol/commandcontrol/agent/functions"
)

// An operator's own function in Go, registered the way the built-ins are:
// a Spec with typed arguments and a func; the set validates the arguments
// (400 for an unknown or mistyped one) and recovers a panic.
func ExampleSet_Add() {
	set := functions.New(&functions.Env{MachineID: "10.0.0.5_web01"})
	greet := functions.FuncOf(functions.Spec{
		Name:     "greet",
		Help:     "says hello",
		ReadOnly: true,
		Args:     []functions.Arg{{Name: "who", Type: functions.TypeString, Required: true}},
	}, func(ctx context.Context, args functions.Args) (any, error) {
		return map[string]string{"hello": args.String("who")}, nil
	})
	if err := set.Add(greet); err != nil {
		fmt.Println(err)
		return
	}
	res, err := set.Call(context.Background(), "greet", []byte(`{"who":"world"}`))
	fmt.Println(res, err)
	_, err = set.Call(context.Background(), "greet", []byte(`{"whom":"world"}`))
	fmt.Println(err)
	// Output:
	// map[hello:world] <nil>
	// 400 greet has no argument "whom" (it takes: who:string)
}
