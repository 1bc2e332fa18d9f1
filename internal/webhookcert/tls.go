package webhookcert

import "crypto/tls"

func tlsKeyPair(cert, key []byte) (tls.Certificate, error) { return tls.X509KeyPair(cert, key) }
