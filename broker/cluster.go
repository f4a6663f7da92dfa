package broker

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
)

// Routes join brokers into one cluster. Each broker that accepts a route
// checks it: with a cluster secret the dialling broker must present it
// (user RouteUser), with route TLS both ends verify each other's
// certificate against the CA. A cluster listener off loopback with
// neither is refused (see routeOptions): a server that joined would see
// and could publish everything, $SYS included.

// NewClusterSecret returns a new random cluster secret (256 bits).
func NewClusterSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ReadClusterSecret reads the cluster secret file (written by cc-broker
// cluster-secret); it must not be readable by group or others.
func ReadClusterSecret(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("cluster secret: %w (create one with: cc-broker cluster-secret --secret-out %s)", err, path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("cluster secret %s is readable by others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("cluster secret %s is empty or shorter than 16 characters (create one with: cc-broker cluster-secret)", path)
	}
	return s, nil
}
