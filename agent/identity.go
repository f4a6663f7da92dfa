package agent

import (
	"bufio"
	"crypto/ed25519"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// LoadOrCreateKey reads the agent's nkey seed from path, creating it (mode
// 0600) on first start. A key file that group or others can read is refused.
func LoadOrCreateKey(path string) (nkeys.KeyPair, bool, error) {
	kp, created, err := keyfile.LoadOrCreateSeed("key file", path, nkeys.CreateUser)
	if err != nil {
		return nil, false, err
	}
	if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
		return nil, false, fmt.Errorf("key file %s holds a %c key; an agent needs a user key (seed starting SU)", path, pub[0])
	}
	return kp, created, nil
}

// DefaultMachineID is <primary IP>_<hostname>: the IPv4 address of the
// interface holding the default route (read from /proc/net/route, no
// traffic sent), else the first non-loopback address, else 127.0.0.1.
func DefaultMachineID() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("hostname: %w", err)
	}
	host = sanitizeHost(host)
	return PrimaryIP() + "_" + host, nil
}

func sanitizeHost(h string) string {
	b := []byte(h)
	for i, c := range b {
		ok := c == '.' || c == '-' || c == '_' || c == ':' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			b[i] = '-'
		}
	}
	return string(b)
}

// PrimaryIP returns the machine's primary IPv4 address.
func PrimaryIP() string {
	if ifname := defaultRouteInterface("/proc/net/route"); ifname != "" {
		if ip := interfaceIPv4(ifname); ip != "" {
			return ip
		}
	}
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		if ip := interfaceIPv4(ifc.Name); ip != "" {
			return ip
		}
	}
	return "127.0.0.1"
}

// defaultRouteInterface reads a /proc/net/route table and returns the
// interface of the 0.0.0.0/0 route.
func defaultRouteInterface(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0]
		}
	}
	return ""
}

func interfaceIPv4(name string) string {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return ""
}

// signerFor signs the server nonce with a key derived once from the seed
// (nkeys derives it on every Sign); it falls back to kp.Sign.
func signerFor(kp nkeys.KeyPair) nats.SignatureHandler {
	seed, err := kp.Seed()
	if err == nil {
		if _, raw, err := nkeys.DecodeSeed(seed); err == nil && len(raw) == ed25519.SeedSize {
			priv := ed25519.NewKeyFromSeed(raw)
			return func(nonce []byte) ([]byte, error) { return ed25519.Sign(priv, nonce), nil }
		}
	}
	return kp.Sign
}
