package functions

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
)

func init() { Register(fleet.FnMachineInfo, newMachineInfo) }

// staticInfoTTL is how long facts that change only with a reboot or an
// upgrade (platform, kernel, CPU model, virtualization) are cached.
const staticInfoTTL = 10 * time.Minute

// MachineInfoReply answers machine-info.
type MachineInfoReply struct {
	MachineID       string         `json:"machine_id"`
	AgentVersion    string         `json:"agent_version"`
	Hostname        string         `json:"hostname"`
	OS              string         `json:"os"`
	Platform        string         `json:"platform"`
	PlatformFamily  string         `json:"platform_family,omitempty"`
	PlatformVersion string         `json:"platform_version"`
	KernelVersion   string         `json:"kernel_version"`
	Arch            string         `json:"arch"`
	Virtualization  Virtualization `json:"virtualization"`
	// Container is set when the agent runs in a container.
	Container *Container `json:"container,omitempty"`
	// OSMachineID is the OS's own machine id (/etc/machine-id), where
	// there is one.
	OSMachineID      string      `json:"os_machine_id,omitempty"`
	BootTime         time.Time   `json:"boot_time,omitzero"`
	UptimeSeconds    uint64      `json:"uptime_seconds"`
	CPU              CPUInfo     `json:"cpu"`
	MemoryTotalBytes uint64      `json:"memory_total_bytes"`
	Interfaces       []Interface `json:"interfaces"`
	// IPs are every non-loopback address, without prefix length.
	IPs []string `json:"ips"`
}

// Virtualization is the hypervisor or container system ("kvm", "docker")
// and whether this machine is its "host" or a "guest"; empty on bare metal.
type Virtualization struct {
	System string `json:"system"`
	Role   string `json:"role"`
}

// CPUInfo describes the processors.
type CPUInfo struct {
	Model    string `json:"model"`
	Logical  int    `json:"logical"`
	Physical int    `json:"physical"`
}

// Interface is one network interface and its addresses in CIDR form.
type Interface struct {
	Name      string   `json:"name"`
	MAC       string   `json:"mac,omitempty"`
	Up        bool     `json:"up"`
	Addresses []string `json:"addresses"`
}

type machineInfo struct {
	env *Env

	mu       sync.Mutex
	static   *MachineInfoReply // the cached slow facts
	staticAt time.Time
}

func newMachineInfo(env *Env) (Function, error) { return &machineInfo{env: env}, nil }

func (f *machineInfo) Spec() Spec {
	return Spec{
		Name:     fleet.FnMachineInfo,
		Help:     "host facts: hostname, OS, kernel, virtualization, uptime, CPU, memory and IP addresses",
		ReadOnly: fleet.ReadOnlyBuiltin(fleet.FnMachineInfo),
	}
}

func (f *machineInfo) Call(ctx context.Context, _ Args) (any, error) {
	ctx = psutilContext(ctx, f.env.Root)
	r := *f.staticInfo(ctx)
	r.MachineID, r.AgentVersion = f.env.MachineID, f.env.Version
	r.Hostname, _ = os.Hostname()
	if !r.BootTime.IsZero() {
		r.UptimeSeconds = uint64(max(0, f.env.clock()().Sub(r.BootTime).Seconds()))
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		r.MemoryTotalBytes = vm.Total
	}
	r.Interfaces, r.IPs = interfaces()
	return &r, nil
}

// staticInfo returns the cached slow facts, reading them again after
// [staticInfoTTL]. Facts gopsutil cannot read are left empty.
func (f *machineInfo) staticInfo(ctx context.Context) *MachineInfoReply {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.static != nil && f.env.clock()().Sub(f.staticAt) < staticInfoTTL {
		return f.static
	}
	r := &MachineInfoReply{OS: runtime.GOOS, Arch: runtime.GOARCH}
	r.Platform, r.PlatformFamily, r.PlatformVersion, _ = host.PlatformInformationWithContext(ctx)
	r.KernelVersion, _ = host.KernelVersionWithContext(ctx)
	if arch, err := host.KernelArch(); err == nil && arch != "" {
		r.Arch = arch
	}
	r.Virtualization.System, r.Virtualization.Role, _ = host.VirtualizationWithContext(ctx)
	if bt, err := host.BootTimeWithContext(ctx); err == nil && bt > 0 {
		r.BootTime = time.Unix(int64(bt), 0).UTC()
	}
	r.Container = detectContainer(f.env.Root)
	if r.Container != nil && r.Virtualization.System == "" {
		r.Virtualization = Virtualization{System: r.Container.Runtime, Role: "guest"}
	}
	if id, err := os.ReadFile(filepath.Join(f.env.Root, "etc", "machine-id")); err == nil {
		r.OSMachineID = strings.TrimSpace(string(id))
	}
	if infos, err := cpu.InfoWithContext(ctx); err == nil && len(infos) > 0 {
		r.CPU.Model = infos[0].ModelName
	}
	r.CPU.Logical, _ = cpu.CountsWithContext(ctx, true)
	r.CPU.Physical, _ = cpu.CountsWithContext(ctx, false)
	if r.CPU.Logical == 0 {
		r.CPU.Logical = runtime.NumCPU()
	}
	f.static, f.staticAt = r, f.env.clock()()
	return r
}

// interfaces lists every interface with its addresses, and every
// non-loopback IP on its own.
func interfaces() ([]Interface, []string) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, nil
	}
	out, ips := []Interface{}, []string{}
	for _, ifc := range ifs {
		it := Interface{Name: ifc.Name, MAC: ifc.HardwareAddr.String(), Up: ifc.Flags&net.FlagUp != 0, Addresses: []string{}}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			it.Addresses = append(it.Addresses, a.String())
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() {
				ips = append(ips, ipn.IP.String())
			}
		}
		out = append(out, it)
	}
	return out, ips
}
