package functions

import "testing"

func FuzzParseArgs(f *testing.F) {
	spec := Spec{Name: "fz", Args: []Arg{
		{Name: "s", Type: TypeString}, {Name: "n", Type: TypeInt},
		{Name: "f", Type: TypeFloat}, {Name: "b", Type: TypeBool, Required: true},
	}}
	for _, seed := range []string{"", "{}", `{"b":true}`, `{"b":"1","n":"7","f":1e308,"s":"x"}`, `{"n":1e400}`, `[`, `null`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		args, err := ParseArgs(spec, body)
		if err != nil {
			return
		}
		if _, ok := args["b"].(bool); !ok {
			t.Fatalf("required bool missing or mistyped in %v", args)
		}
		for k, v := range args {
			switch k {
			case "s":
				_ = v.(string)
			case "n":
				_ = v.(int64)
			case "f":
				_ = v.(float64)
			}
		}
	})
}

func FuzzProcParsers(f *testing.F) {
	f.Add("0.11 0.13 0.05 1/81 3742", "some avg10=0.64 avg60=0.94 avg300=0.96 total=5775240")
	f.Add("", "full")
	f.Fuzz(func(t *testing.T, a, b string) {
		parseLoadavg(a)
		parsePSI(b)
		parseProcStat([]byte(a + "\n" + b))
		parseDiskstats([]byte(a + "\n" + b))
	})
}
