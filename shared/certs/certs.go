// Package certs makes and loads the TLS certificates quiccast's QUIC
// listeners need: self-signed ECDSA P-256 certificates for development and
// relay peers that authenticate by token, and certificate files for
// production.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"
)

// SelfSigned returns an ECDSA P-256 certificate for hosts (names or IP
// addresses) valid from a minute ago for validity. ECDSA P-256 and a
// validity under 14 days are what browsers accept for WebTransport's
// serverCertificateHashes.
func SelfSigned(hosts []string, validity time.Duration) (tls.Certificate, error) {
	return SelfSignedAt(hosts, time.Now(), validity)
}

// SelfSignedAt is SelfSigned for a certificate made at now: valid from a
// minute before now for validity.
func SelfSignedAt(hosts []string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 96))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "quiccast"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certs: sign: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Hash returns the SHA-256 of a certificate's DER bytes, as WebTransport's
// serverCertificateHashes wants it.
func Hash(c tls.Certificate) [32]byte { return sha256.Sum256(c.Certificate[0]) }
