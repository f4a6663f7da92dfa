package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// The examples that need a live fleet compile but do not run.

func ExampleConnect() {
	c, err := bench.Connect("nats://127.0.0.1:4222", bench.WithSeedFile("cc-data/admin.nk"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("connected as", c.Key())
}

// A broker across the network is reached over TLS, verified against the
// CA that signed its certificate; a client certificate is added where the
// broker requires mutual TLS. Plain text to it would be refused.
func ExampleWithTLSCA() {
	c, err := bench.Connect("tls://control.example:4222", bench.WithSeedFile("admin.nk"),
		bench.WithTLSCA("/etc/cc/ca.pem"), bench.WithClientCert("/etc/cc/operator.pem", "/etc/cc/operator-key.pem"))
	if err != nil {
		log.Fatal(err) // e.g. bench.ErrTLS: the broker's certificate is not signed by that CA
	}
	defer c.Close()
}

func ExampleClient_Call() {
	c, err := bench.Connect("nats://127.0.0.1:4222", bench.WithSeedFile("cc-data/admin.nk"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Every web server in New Jersey whose load average is above 10.
	sel, _ := bench.ParseSelector("role=web,location=New-Jersey")
	busy, _ := bench.ParseFilter("load1 > 10")
	res, err := c.Call(context.Background(), "current-load", nil, bench.CallOptions{Where: sel, Timeout: 3 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range res.Replied {
		if r.Status == bench.StatusOK && busy.Match(r.Result) {
			fmt.Println(r.Machine, string(r.Result))
		}
	}
	fmt.Println(res.Summary.String(), "silent:", res.NoResponse)
}

func ExampleClient_Stream() {
	c, err := bench.Connect("nats://127.0.0.1:4222", bench.WithSeedFile("cc-data/admin.nk"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Stream keeps nothing: fit for very large fleets.
	sum, err := c.Stream(context.Background(), "machine-info", nil, bench.CallOptions{}, func(r bench.Reply) {
		fmt.Println(r.Machine, r.Status)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
}

func ExampleClient_Watch() {
	c, err := bench.Connect("nats://127.0.0.1:4222", bench.WithSeedFile("cc-data/admin.nk"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	online := map[string]bool{}
	err = c.Watch(context.Background(), func(ev fleet.PresenceEvent) {
		switch ev.Event {
		case bench.EventPresent, fleet.EventJoined:
			online[ev.Machine] = true
		case fleet.EventLeft:
			delete(online, ev.Machine)
		case bench.EventSynced:
			fmt.Println(len(online), "online")
		}
	})
	log.Fatal(err)
}

func ExampleParseSelector() {
	sel, err := bench.ParseSelector("role=web,hostname=web*")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sel.Match("10.0.0.5_web01", map[string]string{"role": "web"}))
	fmt.Println(sel.Match("10.0.0.6_db01", map[string]string{"role": "web"}))

	_, err = bench.ParseSelector("role")
	fmt.Println(err)
	// Output:
	// true
	// false
	// selector term "role": want key=value, key!=value, key in (a,b) or key not in (a,b)
}

func ExampleParseFilter() {
	f, err := bench.ParseFilter(`load1 > 10 and memory.used_percent >= 90`)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f.Match(json.RawMessage(`{"load1": 12.1, "memory": {"used_percent": 93}}`)))
	fmt.Println(f.Match(json.RawMessage(`{"load1": 12.1}`))) // no memory: no match

	_, err = bench.ParseFilter("load1 >")
	fmt.Println(err)
	// Output:
	// true
	// false
	// filter "load1 >", column 8: want a value after ">", found the end of the filter
}
