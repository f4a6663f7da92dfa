package fleet

import (
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

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
	BootTime time.Time `json:"boot_time,omitzero"`
}

// MaxFactsName bounds an agent's connection name: its machine id, a space
// and its facts as JSON. A name longer than this carries no facts.
const MaxFactsName = 1024

// EncodeFactsName is the connection name an agent connects with: its
// machine id, then (when facts is not nil) a space and the facts as JSON.
// The control service's callout reads the machine id from it, and its
// presence the facts (the brokers report a connection's name in their
// connect events and CONNZ), so facts arrive with the machine's join and
// need no subject of their own. Text fields too long for MaxFactsName are
// cut until the name fits.
func EncodeFactsName(id string, facts *Facts) string {
	if facts == nil {
		return id
	}
	f := *facts
	f.clean()
	for {
		b, err := json.Marshal(f)
		if err != nil {
			return id
		}
		name := id + " " + string(b)
		if len(name) <= MaxFactsName || !f.shorten() {
			if len(name) > MaxFactsName {
				return id
			}
			return name
		}
	}
}

// clean makes every text field fit a name: control characters become
// spaces and a field is cut to MaxFactText bytes.
func (f *Facts) clean() {
	for _, s := range f.texts() {
		*s = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, strings.ToValidUTF8(*s, ""))
		if len(*s) > MaxFactText {
			*s = strings.ToValidUTF8((*s)[:MaxFactText], "")
		}
	}
	f.BootTime = f.BootTime.UTC()
}

func (f *Facts) texts() []*string {
	return []*string{&f.OS, &f.Platform, &f.PlatformVersion, &f.Kernel, &f.Arch, &f.Virtualization, &f.Container, &f.AgentVersion}
}

// shorten halves the longest text field; false when none is longer than
// 16 bytes (nothing left worth cutting).
func (f *Facts) shorten() bool {
	var longest *string
	for _, s := range f.texts() {
		if longest == nil || len(*s) > len(*longest) {
			longest = s
		}
	}
	if len(*longest) <= 16 {
		return false
	}
	*longest = strings.ToValidUTF8((*longest)[:len(*longest)/2], "")
	return true
}

// FactsNameID is the machine id part of a connection name: what comes
// before " {", or the whole name when it carries no facts (so a name
// like "web 01" is checked, and refused, as a whole). The callout checks
// it as any machine id.
func FactsNameID(name string) string {
	id, _ := splitFactsName(name)
	return id
}

// splitFactsName cuts name at its first " {": the id and the facts' JSON
// ("" for none).
func splitFactsName(name string) (id, facts string) {
	if i := strings.Index(name, " {"); i >= 0 {
		return name[:i], name[i+1:]
	}
	return name, ""
}

// ParseFactsName splits an agent's connection name ([EncodeFactsName])
// into its machine id and facts. Facts are nil when the name carries
// none, or when they are malformed: longer than MaxFactsName, not one
// JSON object of Facts' fields, or with a field out of bounds (a text
// field longer than MaxFactText or holding control characters, a
// negative count). The id is not validated: the callout did that before
// the connection was admitted, and presence trusts the user the callout
// named, never this id.
func ParseFactsName(name string) (id string, facts *Facts) {
	id, rest := splitFactsName(name)
	if rest == "" || len(name) > MaxFactsName {
		return id, nil
	}
	var f Facts
	d := json.NewDecoder(strings.NewReader(rest))
	d.DisallowUnknownFields()
	if d.Decode(&f) != nil || d.More() || f.validate() != nil {
		return id, nil
	}
	if _, err := d.Token(); err != io.EOF {
		return id, nil
	}
	return id, &f
}

// MaxFactText bounds one text field of [Facts].
const MaxFactText = 256

func (f *Facts) validate() error {
	for _, s := range f.texts() {
		if len(*s) > MaxFactText || !utf8.ValidString(*s) || strings.ContainsFunc(*s, unicode.IsControl) {
			return errors.New("bad fact text")
		}
	}
	if f.CPUs < 0 {
		return errors.New("negative cpus")
	}
	return nil
}

// FactsEqual reports whether a and b (either may be nil) hold the same facts.
func FactsEqual(a, b *Facts) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.BootTime, y.BootTime = time.Time{}, time.Time{}
	return x == y && a.BootTime.Equal(b.BootTime)
}

// Fact keys a selector may name (besides labels and the built-in
// machine, ip and hostname), each with its value in f as text ("" when
// unknown). memory is in bytes.
var FactKeys = []string{"os", "platform", "platform_version", "kernel", "arch", "cpus", "memory", "virtualization", "container", "agent_version"}

// Fact returns fact key of f as text, and whether key is a fact key and f
// holds it (a zero count is not held).
func (f *Facts) Fact(key string) (string, bool) {
	if f == nil {
		return "", false
	}
	var v string
	switch key {
	case "os":
		v = f.OS
	case "platform":
		v = f.Platform
	case "platform_version":
		v = f.PlatformVersion
	case "kernel":
		v = f.Kernel
	case "arch":
		v = f.Arch
	case "cpus":
		if f.CPUs > 0 {
			v = strconv.Itoa(f.CPUs)
		}
	case "memory":
		if f.MemoryBytes > 0 {
			v = strconv.FormatUint(f.MemoryBytes, 10)
		}
	case "virtualization":
		v = f.Virtualization
	case "container":
		v = f.Container
	case "agent_version":
		v = f.AgentVersion
	}
	return v, v != ""
}
