package broker

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
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
	b, err := keyfile.Read("cluster secret", path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("cluster secret: %w (create one with: cc-broker cluster-secret --secret-out %s)", err, path)
	case errors.Is(err, keyfile.ErrUnsafe):
		return "", err
	case err != nil:
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("cluster secret %s is empty or shorter than 16 characters (create one with: cc-broker cluster-secret)", path)
	}
	return s, nil
}
