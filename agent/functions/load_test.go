package functions

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions/functionstest"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

func TestParseLoadavg(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"0.11 0.13 0.05 1/81 3742\n", "{0.11 0.13 0.05}", false},
		{"12.50 7.25 3.05", "{12.5 7.25 3.05}", false},
		{"0.11 0.13", "", true},
		{"a b c 1/2 3", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := parseLoadavg(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseLoadavg(%q): err %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && fmt.Sprint(got) != tt.want {
			t.Errorf("parseLoadavg(%q): got %q, want %q", tt.in, fmt.Sprint(got), tt.want)
		}
	}
}

func TestParsePSI(t *testing.T) {
	got, err := parsePSI("some avg10=0.64 avg60=0.94 avg300=0.96 total=5775240\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "map[full_avg10:0 full_avg300:0 full_avg60:0 full_total:0 some_avg10:0.64 some_avg300:0.96 some_avg60:0.94 some_total:5.77524e+06]"
	if fmt.Sprint(got) != want {
		t.Errorf("got %q, want %q", fmt.Sprint(got), want)
	}
	for _, bad := range []string{"", "other avg10=1", "some avg10", "some avg10=x"} {
		if _, err := parsePSI(bad); err == nil {
			t.Errorf("parsePSI(%q): got no error", bad)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	data, err := os.ReadFile(linuxRoot + "/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseProcStat(data)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("cpus=%d running=%d blocked=%d user=%v idle=%v", len(st.perCPU), st.procsRunning, st.procsBlocked, st.total.user, st.total.idle)
	want := "cpus=2 running=3 blocked=1 user=1890 idle=64041"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := parseProcStat([]byte("intr 1 2\n")); err == nil {
		t.Error("parseProcStat without cpu line: got no error")
	}
}

func TestCurrentLoadFixture(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc under Env.Root on Linux only")
	}
	res, err := callFn(t, linuxRoot, "current-load", "")
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*LoadReply)
	got := fmt.Sprintf("%v %v %v running=%d blocked=%d cpus=%d cpu.some_avg10=%v io.full_avg10=%v memory.some_total=%v",
		r.Load1, r.Load5, r.Load15, r.ProcsRunning, r.ProcsBlocked, r.CPUs,
		r.Pressure["cpu"]["some_avg10"], r.Pressure["io"]["full_avg10"], r.Pressure["memory"]["some_total"])
	want := "12.5 7.25 3.05 running=3 blocked=1 cpus=2 cpu.some_avg10=0.64 io.full_avg10=1.25 memory.some_total=759997"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// The reading holds its JSON, the same encoding/json writes.
	enc, err := json.Marshal(r)
	if err != nil || r.EncodedJSON() == nil || string(r.EncodedJSON()) != string(enc) {
		t.Errorf("EncodedJSON %s, json.Marshal %s (%v)", r.EncodedJSON(), enc, err)
	}
	if (*LoadReply)(nil).EncodedJSON() != nil {
		t.Error("a nil reading has JSON")
	}
	// No PSI, no stat: pressure is left out, load still answers.
	root := t.TempDir()
	pkgdbtest.CopyFile(t, linuxRoot+"/proc/loadavg", root+"/proc/loadavg")
	res, err = callFn(t, root, "current-load", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(*LoadReply); r.Pressure != nil || r.Load1 != 12.5 || r.CPUs != runtime.NumCPU() {
		t.Errorf("without PSI: got %+v", r)
	}
	_, err = callFn(t, t.TempDir(), "current-load", "")
	functionstest.WantCode(t, err, 503, "loadavg")
}

// TestCurrentLoadCacheAgeReadsEnvClock: a reading is reused for
// loadCacheFor by Env.Now, then read again.
func TestCurrentLoadCacheAgeReadsEnvClock(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc under Env.Root on Linux only")
	}
	root := t.TempDir()
	pkgdbtest.CopyFile(t, linuxRoot+"/proc/loadavg", root+"/proc/loadavg")
	now := fixtureTime.AddDate(30, 0, 0) // any date: only the age counts
	fn, _ := newLoad(&Env{Root: root, Now: func() time.Time { return now }})
	load1 := func() float64 {
		t.Helper()
		res, err := fn.Call(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.(*LoadReply).Load1
	}
	if got := load1(); got != 12.5 {
		t.Fatalf("got load1 %v, want 12.5", got)
	}
	if err := os.WriteFile(root+"/proc/loadavg", []byte("0.50 0.25 0.05 1/100 42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	now = now.Add(loadCacheFor - time.Nanosecond)
	if got := load1(); got != 12.5 {
		t.Errorf("within %v: got load1 %v, want the cached 12.5", loadCacheFor, got)
	}
	now = now.Add(time.Nanosecond)
	if got := load1(); got != 0.5 {
		t.Errorf("after %v: got load1 %v, want 0.5 read again", loadCacheFor, got)
	}
}
