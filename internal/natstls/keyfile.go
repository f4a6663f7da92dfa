package natstls

import (
	"crypto/tls"
	"fmt"
	"os"
	"runtime"
)

// LoadKeyPair loads a certificate and its private key, refusing a key file
// that group or others may read (as every seed file is refused): the
// key is the identity the certificate vouches for. Windows has no such
// mode bits; there it is not checked.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if runtime.GOOS != "windows" {
		st, err := os.Stat(keyFile)
		if err != nil {
			return tls.Certificate{}, err
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			return tls.Certificate{}, fmt.Errorf("TLS key %s is readable by others (mode %v); chmod 600 it", keyFile, perm)
		}
	}
	return tls.LoadX509KeyPair(certFile, keyFile)
}
