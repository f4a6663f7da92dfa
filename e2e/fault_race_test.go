//go:build race

package e2e

// raceEnabled is set when the tests run under the race detector, which
// slows the broker and the agents tenfold or more.
const raceEnabled = true
