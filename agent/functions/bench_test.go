package functions

import (
	"context"
	"testing"
	"time"
)

// benchCall calls fn b.N times and fails the benchmark on an error.
func benchCall(b *testing.B, fn Function) {
	b.Helper()
	ctx := context.Background()
	for b.Loop() {
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSwListCold(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newSwList(&Env{Root: debianRoot})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSwListCached(b *testing.B) {
	fn, _ := newSwList(&Env{Root: debianRoot})
	benchCall(b, fn)
}

func BenchmarkSecPatchesCold(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newSecPatches(&Env{Root: debianRoot})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSecPatchesCached(b *testing.B) {
	fn, _ := newSecPatches(&Env{Root: debianRoot})
	benchCall(b, fn)
}

func BenchmarkMachineInfoCold(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newMachineInfo(&Env{Root: "/"})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMachineInfoCached(b *testing.B) {
	fn, _ := newMachineInfo(&Env{Root: "/"})
	benchCall(b, fn)
}

func BenchmarkCurrentLoad(b *testing.B) {
	fn, _ := newLoad(&Env{Root: "/"})
	benchCall(b, fn)
}

func BenchmarkCurrentCPUMemDiskIO(b *testing.B) {
	fn, _ := newCPUMemDiskIO(&Env{Root: "/"})
	f := fn.(*cpuMemDiskIO)
	f.sample(context.Background())
	f.cur.at = f.cur.at.Add(-time.Second)
	f.sample(context.Background())
	benchCall(b, fn)
}

func BenchmarkCPUMemDiskIOSample(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		if _, err := readIOSample(ctx, "/"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompareDebVersions(b *testing.B) {
	for b.Loop() {
		compareDebVersions("1:9.2p1-2+deb12u6", "1:9.2p1-2+deb12u9")
	}
}

func BenchmarkSwListRpmSqliteCold(b *testing.B) { benchSwListCold(b, "testdata/rpm-sqlite") }
func BenchmarkSwListRpmNdbCold(b *testing.B)    { benchSwListCold(b, "testdata/rpm-ndb") }
func BenchmarkSwListRpmBdbCold(b *testing.B)    { benchSwListCold(b, "testdata/rpm-bdb") }

func BenchmarkSwListRpmSqliteCached(b *testing.B) {
	fn, _ := newSwList(&Env{Root: "testdata/rpm-sqlite"})
	benchCall(b, fn)
}

func benchSwListCold(b *testing.B, root string) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newSwList(&Env{Root: root})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSecPatchesAlpineCached(b *testing.B) {
	fn, _ := newSecPatches(&Env{Root: "testdata/alpine-index"})
	benchCall(b, fn)
}

func BenchmarkCustomFunctionEcho(b *testing.B) {
	fn := NewCustomFunction(Definition{Name: "echo", Command: []string{"/bin/echo", "{}"}, Timeout: Duration(5 * time.Second),
		Output: OutputAuto, MaxOutputBytes: DefaultCustomOutputBytes, MaxConcurrent: 1}, &Env{})
	benchCall(b, fn)
}
