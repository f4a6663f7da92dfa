package functions

import (
	"fmt"
	"testing"
)

func TestReadCgroupMemory(t *testing.T) {
	tests := []struct{ root, want string }{
		{"testdata/cgroup2", "&{Version:2 Path:/ LimitBytes:536870912 UsageBytes:134217728 UsedPercent:25}"},
		{"testdata/cgroup1", "&{Version:1 Path:/docker/4f1c LimitBytes:1073741824 UsageBytes:268435456 UsedPercent:25}"},
		{"testdata/cgroup2-nolimit", "<nil>"},
		{debianRoot, "<nil>"},
	}
	for _, tt := range tests {
		if got := fmt.Sprintf("%+v", readCgroupMemory(tt.root)); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.root, got, tt.want)
		}
	}
	fn, _ := newCPUMemDiskIO(&Env{Root: "testdata/cgroup2"})
	res, err := fn.Call(t.Context(), Args{})
	if err != nil {
		t.Fatal(err)
	}
	if m := res.(*CPUMemDiskIOReply).CgroupMemory; m == nil || m.LimitBytes != 536870912 {
		t.Errorf("current-cpu-mem-diskio: cgroup_memory %+v, want the 512 MiB limit", m)
	}
}

func TestDetectContainer(t *testing.T) {
	tests := []struct{ root, want string }{
		{"testdata/container", "&{Runtime:docker Evidence:/.dockerenv}"},
		{"testdata/kube", "&{Runtime:kubernetes Evidence:/proc/1/cgroup}"},
		{debianRoot, "<nil>"},
	}
	for _, tt := range tests {
		if got := fmt.Sprintf("%+v", detectContainer(tt.root)); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.root, got, tt.want)
		}
	}
}
