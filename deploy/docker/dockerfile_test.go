// Package docker holds no code: its test checks deploy/docker/Dockerfile
// against go.mod, the compose file and the builders that must read it.
// .ci/docker-test.sh builds the prebuilt targets for real.
package docker

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type stage struct{ from, name string }

// stages returns the Dockerfile's FROM lines in order.
func stages(t *testing.T) []stage {
	t.Helper()
	var out []stage
	re := regexp.MustCompile(`(?im)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$`)
	for _, m := range re.FindAllStringSubmatch(read(t, "Dockerfile"), -1) {
		out = append(out, stage{m[1], m[2]})
	}
	if len(out) == 0 {
		t.Fatal("Dockerfile: no FROM line")
	}
	return out
}

// TestDockerfileGoVersionIsGoMods: the source stage compiles with the Go
// of go.mod's go line (major.minor; the image's patch release may be newer).
func TestDockerfileGoVersionIsGoMods(t *testing.T) {
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)(\.\d+)?\s*$`).FindStringSubmatch(read(t, "../../go.mod"))
	if m == nil {
		t.Fatal("go.mod: no go line")
	}
	var golang []string
	for _, s := range stages(t) {
		if strings.HasPrefix(s.from, "golang:") {
			golang = append(golang, s.from)
		}
	}
	if len(golang) != 1 {
		t.Fatalf("want one FROM golang:… stage, have %q", golang)
	}
	tag := strings.TrimPrefix(golang[0], "golang:")
	if v, _, _ := strings.Cut(tag, "-"); v != m[1] {
		t.Errorf("Dockerfile builds with %s (Go %s); go.mod's go line says %s: make them agree", golang[0], v, m[1]+m[2])
	}
}

// TestDockerfileStages: the default target (the last stage) is source;
// every stage the compose file can ask for exists, for CC_IMAGE_TARGET
// unset and set to prebuilt; the prebuilt stages come before any image
// pulled from a registry, since the legacy builder builds every stage up to
// its target.
func TestDockerfileStages(t *testing.T) {
	st := stages(t)
	if last := st[len(st)-1].name; last != "source" {
		t.Errorf("the last stage (the default target) is %q, want source", last)
	}
	var names []string
	pulled := -1
	for i, s := range st {
		names = append(names, s.name)
		local := s.from == "scratch" || slices.Contains(names[:i], s.from)
		if !local && pulled < 0 {
			pulled = i
		}
		if strings.HasPrefix(s.name, "prebuilt") && pulled >= 0 {
			t.Errorf("stage %s comes after FROM %s: building it with the legacy builder would pull", s.name, st[pulled].from)
		}
	}
	compose := read(t, "../../docker-compose.yml")
	targets := regexp.MustCompile(`(?m)^\s*target:\s*\$\{CC_IMAGE_TARGET:-([a-z-]+)\}(\S*)\s*$`).FindAllStringSubmatch(compose, -1)
	if len(targets) < 2 {
		t.Fatalf("docker-compose.yml: want the build targets of control and the agents from CC_IMAGE_TARGET, found %q", targets)
	}
	for _, m := range targets {
		if m[1] != "source" {
			t.Errorf("docker-compose.yml: CC_IMAGE_TARGET defaults to %q, want source", m[1])
		}
		for _, v := range []string{m[1], "prebuilt"} {
			if !slices.Contains(names, v+m[2]) {
				t.Errorf("docker-compose.yml asks for target %s (CC_IMAGE_TARGET=%s); the Dockerfile's stages are %q", v+m[2], v, names)
			}
		}
	}
}

// TestDockerfileLegacyBuilderSyntax: nothing only BuildKit parses, so the
// prebuilt targets build with docker-compose v1 and the legacy builder.
func TestDockerfileLegacyBuilderSyntax(t *testing.T) {
	for i, line := range strings.Split(read(t, "Dockerfile"), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, bad := range []string{"--mount", "--chmod", "--link", "--parents", "--exclude", "<<"} {
			if strings.Contains(line, bad) {
				t.Errorf("Dockerfile:%d uses %s, which the legacy builder does not parse: %s", i+1, bad, line)
			}
		}
	}
}
