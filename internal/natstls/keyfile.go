package natstls

import (
	"crypto/tls"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// LoadKeyPair loads a certificate and its private key, refusing a key file
// that group or others may read (as every seed file is refused): the
// key is the identity the certificate vouches for. Windows has no such
// mode bits; there it is not checked.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if err := keyfile.Check("TLS key", keyFile); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certFile, keyFile)
}
