package natstls

import (
	"crypto/tls"
	"fmt"
	"os"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// LoadKeyPair loads a certificate and its private key, refusing a key file
// that another user may read or may have planted (keyfile.Read, as every
// seed file is refused): the key is the identity the certificate vouches
// for. Windows has no such mode bits; there they are not checked.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	key, err := keyfile.Read("TLS key", keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return c, nil
}
