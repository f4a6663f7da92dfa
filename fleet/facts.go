package fleet

import "time"

// Facts is what an agent reports about its host: the attributes operators
// target by (cc-bench --where os=linux,platform=debian,arch=arm64) besides
// the labels they set by hand. The agent gathers them at start and
// reports them again when they change; the control service keeps the
// newest with the machine's presence, so they appear in a [Server] of a
// snapshot and in the [PresenceEvent]s.
//
// Facts are the machine's own word about itself: they can select it, never
// another machine, and no permission depends on them.
type Facts struct {
	// OS is the GOOS family: linux, darwin, windows, freebsd, …
	OS string `json:"os,omitempty"`
	// Platform is the distribution or product, lower case (debian,
	// ubuntu, alpine, rhel, darwin, windows, …); PlatformVersion its
	// version (12.5, 3.20, …).
	Platform        string `json:"platform,omitempty"`
	PlatformVersion string `json:"platform_version,omitempty"`
	// Kernel is the kernel release (uname -r).
	Kernel string `json:"kernel,omitempty"`
	// Arch is the GOARCH: amd64, arm64, …
	Arch string `json:"arch,omitempty"`
	// CPUs is the number of logical CPUs; MemoryBytes the total memory.
	CPUs        int    `json:"cpus,omitempty"`
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	// Virtualization is the hypervisor or "" on bare metal (kvm, vmware,
	// xen, hyperv, …); Container the container runtime or "" (docker,
	// podman, lxc, kubernetes, …).
	Virtualization string `json:"virtualization,omitempty"`
	Container      string `json:"container,omitempty"`
	// AgentVersion is cc-agent's module version (and commit).
	AgentVersion string `json:"agent_version,omitempty"`
	// BootTime is when the host booted: its uptime is now minus this.
	BootTime time.Time `json:"boot_time,omitempty"`
}
