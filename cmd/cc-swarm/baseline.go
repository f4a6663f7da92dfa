package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/commandcontrol/commandcontrol/swarm"
)

// runBaseline serves n plain responders until ctx ends.
func runBaseline(ctx context.Context, url string, n int, stdout io.Writer) error {
	fmt.Fprintf(stdout, "connecting %d\n", n)
	start := time.Now()
	r, err := swarm.StartBaseline(ctx, url, n)
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Fprintf(stdout, "ready %d %.3f\n", n, time.Since(start).Seconds())
	<-ctx.Done()
	return nil
}
