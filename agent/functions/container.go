package functions

import (
	"os"
	"path/filepath"
	"strings"
)

// Container tells that the agent runs in a container, and which kind.
type Container struct {
	Runtime string `json:"runtime"`
	// Evidence is what gave it away (a file, a cgroup path).
	Evidence string `json:"evidence"`
}

// detectContainer looks under root for the marks container runtimes leave:
// /.dockerenv (Docker), /run/.containerenv (Podman), the "container" file
// systemd-nspawn and LXC write in /run/systemd, and runtime names in
// /proc/1/cgroup (docker, kubepods, containerd, lxc, libpod). It returns
// nil when there is none.
func detectContainer(root string) *Container {
	marks := []struct{ file, runtime string }{
		{".dockerenv", "docker"},
		{"run/.containerenv", "podman"},
	}
	for _, m := range marks {
		if _, err := os.Stat(filepath.Join(root, m.file)); err == nil {
			return &Container{Runtime: m.runtime, Evidence: "/" + m.file}
		}
	}
	if data, err := os.ReadFile(filepath.Join(root, "run", "systemd", "container")); err == nil {
		if name := strings.TrimSpace(string(data)); name != "" {
			return &Container{Runtime: name, Evidence: "/run/systemd/container"}
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "proc", "1", "cgroup"))
	if err != nil {
		return nil
	}
	for _, rt := range []string{"kubepods", "docker", "libpod", "containerd", "lxc"} {
		if strings.Contains(string(data), rt) {
			if rt == "kubepods" {
				rt = "kubernetes"
			}
			return &Container{Runtime: rt, Evidence: "/proc/1/cgroup"}
		}
	}
	return nil
}

// DetectContainer is the container runtime the agent runs in under root
// ("" when none): the agent's facts report it.
func DetectContainer(root string) string {
	if c := detectContainer(root); c != nil {
		return c.Runtime
	}
	return ""
}
