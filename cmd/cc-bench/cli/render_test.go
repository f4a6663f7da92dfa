package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// The renderings of the built-in functions, fed real results: the
// functions themselves run on the agent's fixture trees (a Debian root
// with dpkg, apt's security index and changelogs; a Linux /proc), at a
// fixed time. machine-info and current-cpu-mem-diskio read the host and
// sample over time, so theirs are recorded results of a Debian VM.

const (
	debianRoot = "../../../agent/pkgdb/testdata/debian"
	linuxRoot  = "../../../agent/functions/testdata/linux"
)

// indexExpired is a week and a day after the debian fixture's security
// index was published (Valid-Until is a week): its agent notes it expired.
var indexExpired = time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)

// realResult calls a built-in on a fixture root.
func realResult(t *testing.T, root, fn string, args map[string]any) json.RawMessage {
	t.Helper()
	set := functions.New(&functions.Env{Root: root, MachineID: "10.0.0.5_test", Version: "test",
		Now: func() time.Time { return indexExpired }})
	body, _ := json.Marshal(args)
	if args == nil {
		body = []byte("{}")
	}
	res, err := set.Call(context.Background(), fn, body)
	if err != nil {
		t.Fatalf("%s on %s: %v", fn, root, err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const machineInfoResult = `{"machine_id":"10.0.0.1_web01","agent_version":"v0.9.0","hostname":"web01","os":"linux","platform":"debian","platform_family":"debian","platform_version":"12.8","kernel_version":"6.1.0-28-amd64","arch":"x86_64","virtualization":{"system":"kvm","role":"guest"},"os_machine_id":"5f1c0e6a9b0d4f7e8a2b3c4d5e6f7a8b","boot_time":"2026-11-20T08:12:00Z","uptime_seconds":1053780,"cpu":{"model":"AMD EPYC 7763 64-Core Processor","logical":4,"physical":4},"memory_total_bytes":16767332352,"interfaces":[{"name":"lo","up":true,"addresses":["127.0.0.1/8","::1/128"]},{"name":"ens3","mac":"52:54:00:12:34:56","up":true,"addresses":["10.0.0.1/24","fe80::5054:ff:fe12:3456/64"]}],"ips":["10.0.0.1","fe80::5054:ff:fe12:3456"]}`

const cpuMemResult = `{"cpu_percent":23.4,"cpu_per_core":[20.1,30.2,18.7,24.6],"memory":{"total":16767332352,"used":10401255424,"available":6366076928,"used_percent":62.03},"swap":{"total":1023406080,"used":0,"used_percent":0},"disks":[{"name":"vda","read_bytes_per_sec":1048576,"write_bytes_per_sec":524288,"reads_per_sec":12,"writes_per_sec":40,"util_percent":7.5},{"name":"vdb","read_bytes_per_sec":0,"write_bytes_per_sec":2097152,"reads_per_sec":0,"writes_per_sec":90,"util_percent":31.25}],"sample_interval_seconds":10,"sampled_at":"2026-12-02T01:00:00Z"}`

// fleetOf is four machines: two answering res1 and res2, one failing, one
// silent.
func fleetOf(res1, res2 json.RawMessage) []bench.Reply {
	return []bench.Reply{
		{Machine: "10.0.0.1_web01", Status: bench.StatusOK, Result: res1},
		{Machine: "10.0.0.2_web02", Status: bench.StatusOK, Result: res2},
		{Machine: "10.0.0.3_web03", Status: bench.StatusError, Err: &fleet.Error{Code: fleet.CodeUnavailable, Description: "no dpkg, rpm or apk database"}},
		{Machine: "10.0.0.4_db01", Status: bench.StatusNoResponse},
	}
}

// render prints replies as cc-bench call fn would, with flags.
func render(t *testing.T, fn string, replies []bench.Reply, flags viewFlags) (string, error) {
	t.Helper()
	e := &env{}
	v, err := flags.view(e, fn, false)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	var rows []viewReply
	for _, r := range replies {
		if !v.shows(r) {
			continue
		}
		vr := v.reply(r)
		rows = append(rows, vr)
		if v.streams() {
			if err := v.stream(&out, vr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.format == formatTable {
		err = v.table(&out, rows)
	} else {
		err = v.finishMachine(&out, rows)
	}
	if err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, fn, out.String())
	return out.String(), nil
}

// secondMachine changes a result a little, as another machine's.
func secondMachine(t *testing.T, res json.RawMessage, edit func(m map[string]any)) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(res, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ := json.Marshal(m)
	return b
}

func TestRenderBuiltins(t *testing.T) {
	load := realResult(t, linuxRoot, fleet.FnCurrentLoad, nil)
	sec := realResult(t, debianRoot, fleet.FnInstalledSecPatches, nil)
	sw := realResult(t, debianRoot, fleet.FnSwList, map[string]any{"name": "lib*ssl*"})
	swAll := realResult(t, debianRoot, fleet.FnSwList, nil)
	for _, tt := range []struct {
		name, fn   string
		res1, res2 json.RawMessage
	}{
		{"render_machine_info", fleet.FnMachineInfo, json.RawMessage(machineInfoResult),
			secondMachine(t, json.RawMessage(machineInfoResult), func(m map[string]any) {
				m["hostname"], m["platform"], m["platform_version"], m["arch"] = "web02", "ubuntu", "24.04", "aarch64"
				m["uptime_seconds"], m["virtualization"] = 3600, map[string]any{}
				m["ips"] = []string{"10.0.0.2"}
			})},
		{"render_current_load", fleet.FnCurrentLoad, load,
			secondMachine(t, load, func(m map[string]any) { m["load1"], m["cpus"] = 0.5, 8; delete(m, "pressure") })},
		{"render_cpu_mem_diskio", fleet.FnCurrentCPUMemDiskIO, json.RawMessage(cpuMemResult),
			json.RawMessage(`{"memory":{"total":8383666176,"used":1048576000,"available":7335090176,"used_percent":12.5},"swap":{"total":0,"used":0,"used_percent":0},"warming_up":true,"notes":["disk rates unavailable: cannot read /proc/diskstats"]}`)},
		{"render_sw_list", fleet.FnSwList, sw,
			secondMachine(t, sw, func(m map[string]any) { m["packages"], m["count"] = []any{}, 0 })},
		{"render_sw_list_many", fleet.FnSwList, swAll, swAll},
		{"render_sec_patches", fleet.FnInstalledSecPatches, sec,
			secondMachine(t, sec, func(m map[string]any) {
				m["pending"], m["pending_count"] = []any{}, 0 // the same notes: printed once
			})},
	} {
		out, err := render(t, tt.fn, fleetOf(tt.res1, tt.res2), viewFlags{show: showAll})
		if err != nil {
			t.Fatal(err)
		}
		golden(t, tt.name, out)
	}
}

// TestRenderFormats: one result set through every --output, --fields,
// --show and --summary.
func TestRenderFormats(t *testing.T) {
	load := realResult(t, linuxRoot, fleet.FnCurrentLoad, nil)
	replies := fleetOf(load, secondMachine(t, load, func(m map[string]any) { m["load1"], m["cpus"] = 0.5, 8 }))
	sec := realResult(t, debianRoot, fleet.FnInstalledSecPatches, nil)
	for _, tt := range []struct {
		name    string
		fn      string
		replies []bench.Reply
		flags   viewFlags
	}{
		{"render_csv", fleet.FnCurrentLoad, replies, viewFlags{output: "csv", show: showAll}},
		{"render_csv_patches", fleet.FnInstalledSecPatches, fleetOf(sec, sec), viewFlags{output: "csv", show: showAll}},
		{"render_yaml", fleet.FnCurrentLoad, replies, viewFlags{output: "yaml", show: showAll}},
		{"render_json_fields", fleet.FnCurrentLoad, replies, viewFlags{output: "json", fields: "load1,pressure.io.full_avg10,nope", show: showAll}},
		{"render_yaml_fields_summary", fleet.FnCurrentLoad, replies, viewFlags{output: "yaml", fields: "load1,cpus", show: showAll, summary: true}},
		{"render_fields", fleet.FnCurrentLoad, replies, viewFlags{fields: "load1,cpus,pressure.cpu,missing", show: showAll}},
		{"render_show_failed", fleet.FnCurrentLoad, replies, viewFlags{show: showFailed}},
		{"render_show_ok_summary", fleet.FnCurrentLoad, replies, viewFlags{show: showOK, summary: true}},
		{"render_summary_fields", fleet.FnCurrentLoad, replies, viewFlags{fields: "load1,cpus,nope", show: showAll, summary: true}},
		{"render_csv_summary", fleet.FnCurrentLoad, replies, viewFlags{output: "csv", show: showAll, summary: true}},
		{"render_custom", "disk-free", fleetOf(json.RawMessage(`{"mounts":{"/":{"free_percent":12}},"ok":true,"tags":["a","b"]}`),
			json.RawMessage(`{"mounts":{"/":{"free_percent":40},"/data":{"free_percent":3}},"ok":false}`)), viewFlags{show: showAll, summary: true}},
		{"render_custom_csv", "disk-free", fleetOf(json.RawMessage(`{"mounts":{"/":{"free_percent":12}},"ok":true,"tags":["a","b"],"cmd":"=cmd|' /C calc'!A0"}`),
			json.RawMessage(`{"mounts":{"/":{"free_percent":40},"/data":{"free_percent":3}},"ok":false,"cmd":"-2+3"}`)), viewFlags{output: "csv", show: showAll}},
	} {
		out, err := render(t, tt.fn, tt.replies, tt.flags)
		if err != nil {
			t.Fatal(err)
		}
		golden(t, tt.name, out)
	}
}

func TestRenderFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		flags viewFlags
		json  bool
		want  string
	}{
		{viewFlags{output: "xml", show: showAll}, false, `--output "xml": want table, json, yaml, csv`},
		{viewFlags{output: "csv", show: showAll}, true, "--json is --output json: it cannot go with --output csv"},
		{viewFlags{show: "some"}, false, `--show "some": want ok, failed or all`},
		{viewFlags{show: showAll, fields: "a,,b"}, false, "--fields \"a,,b\": an empty field"},
		{viewFlags{show: showAll, fields: "a..b"}, false, `--fields: "a..b" has an empty part`},
	} {
		e := &env{g: globals{json: tt.json}}
		_, err := tt.flags.view(e, "f", false)
		ee, ok := err.(*exitError)
		if !ok || ee.code != exitUsage || !strings.Contains(ee.msg, tt.want) {
			t.Errorf("%+v: got %v, want a usage error %q", tt.flags, err, tt.want)
		}
	}
	// --json and --output json agree.
	if v, err := (&viewFlags{output: "JSON", show: showAll}).view(&env{g: globals{json: true}}, "f", false); err != nil || v.format != formatJSON {
		t.Errorf("--json --output JSON: %v %v", v, err)
	}
}

// TestRenderHostileResult: a result an agent wrote to attack the
// operator's terminal, spreadsheet or the renderer itself: escapes in
// every field, wrong types, deep nesting, not JSON at all.
func TestRenderHostileResult(t *testing.T) {
	evil := json.RawMessage(`{"hostname":"` + jsonEsc(escClear) + `","platform":["x"],"cpu":"many","memory_total_bytes":-5,` +
		`"uptime_seconds":"1e999","ips":[{"` + jsonEsc(escTitle) + `":1}],"packages":{"a":1},"pending":[1,"x",{"name":"` + jsonEsc(escReload) + `"}],` +
		`"notes":["` + jsonEsc(escTitle) + `",7],"disks":[{"name":"` + jsonEsc(escClear) + `","util_percent":"9"}]}`)
	deep := json.RawMessage(strings.Repeat("[", 1000) + strings.Repeat("]", 1000))
	for fn := range builtinViews {
		for _, res := range []json.RawMessage{evil, deep, json.RawMessage(`"just a string"`), json.RawMessage(`{not json`)} {
			replies := []bench.Reply{{Machine: "10.6.6.6_evil", Status: bench.StatusOK, Result: res}}
			for _, f := range []viewFlags{{show: showAll}, {output: "csv", show: showAll}, {output: "yaml", show: showAll},
				{show: showAll, summary: true, fields: "hostname,pending.2.name"}} {
				out, _ := render(t, fn, replies, f)
				if f.output == "csv" && strings.Contains(out, ",=") {
					t.Errorf("%s csv: a formula cell: %q", fn, out)
				}
			}
		}
	}
}

func jsonEsc(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}
