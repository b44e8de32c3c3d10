package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDevCertificateIsECDSAP256ValidUnder14Days(t *testing.T) {
	d, err := NewDev([]string{"localhost", "127.0.0.1"}, DevOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("key %T, want ECDSA P-256", c.PrivateKey)
	}
	if v := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); v >= MaxHashValidity {
		t.Fatalf("valid for %s, want under %s", v, MaxHashValidity)
	}
	if c.Leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("signature %s", c.Leaf.SignatureAlgorithm)
	}
	cur, next, notAfter := d.Hashes()
	if cur != Hash(*c) || cur == next || !notAfter.Equal(c.Leaf.NotAfter) {
		t.Fatalf("hashes: current %x (served %x), next %x", cur, Hash(*c), next)
	}
}

func TestDevCertificateRotatesToTheAnnouncedNext(t *testing.T) {
	now := time.Now()
	d, err := NewDev([]string{"localhost"}, DevOptions{Validity: 10 * time.Hour, Rotate: 4 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	cur0, next0, _ := d.Hashes()
	now = now.Add(3 * time.Hour)
	if cur, _, _ := d.Hashes(); cur != cur0 {
		t.Fatal("rotated before it was due")
	}
	now = now.Add(time.Hour + time.Second)
	c, _ := d.GetCertificate(nil)
	cur1, next1, _ := d.Hashes()
	if cur1 != next0 || Hash(*c) != next0 {
		t.Fatal("the certificate announced as next is not the one served after the rotation")
	}
	if next1 == cur0 || next1 == next0 {
		t.Fatal("no fresh next certificate after the rotation")
	}
	if d.Rotations.Load() != 1 {
		t.Fatalf("%d rotations", d.Rotations.Load())
	}
	// A clock that jumps far ahead gets a certificate valid now.
	now = now.Add(30 * time.Hour)
	c, _ = d.GetCertificate(nil)
	if now.After(c.Leaf.NotAfter) || now.Before(c.Leaf.NotBefore) {
		t.Fatalf("after a clock jump the certificate is valid %s..%s, now is %s", c.Leaf.NotBefore, c.Leaf.NotAfter, now)
	}
}

func TestDevCertificateRefusesLongValidity(t *testing.T) {
	if _, err := NewDev(nil, DevOptions{Validity: 14 * 24 * time.Hour}); err == nil {
		t.Fatal("14 days accepted; browsers refuse serverCertificateHashes for it")
	}
	if _, err := NewDev(nil, DevOptions{Validity: 5 * time.Hour, Rotate: 3 * time.Hour}); err == nil {
		t.Fatal("a rotation longer than half the validity accepted")
	}
}

// writePair writes a fresh self-signed certificate for host to dir.
func writePair(t *testing.T, dir, host string, mod time.Time) (string, string, tls.Certificate) {
	t.Helper()
	c, err := SelfSigned([]string{host}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{certPath, keyPath} {
		os.Chtimes(p, mod, mod)
	}
	return certPath, keyPath, c
}

func TestFilesReloadWhenTheyChangeAndKeepTheOldOnABadWrite(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	certPath, keyPath, first := writePair(t, dir, "one.example", t0)
	f, err := NewFiles(certPath, keyPath, FilesOptions{Check: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	served := func() [32]byte {
		time.Sleep(2 * time.Millisecond)
		c, err := f.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return Hash(*c)
	}
	if served() != Hash(first) {
		t.Fatal("not serving the file's certificate")
	}
	if served() != Hash(first) || f.Reloads.Load() != 0 {
		t.Fatal("reloaded unchanged files")
	}
	_, _, second := writePair(t, dir, "two.example", t0.Add(time.Minute))
	if served() != Hash(second) || f.Reloads.Load() != 1 {
		t.Fatalf("changed files not reloaded (%d reloads)", f.Reloads.Load())
	}
	// A half-written certificate: the previous one stays.
	os.WriteFile(certPath, []byte("-----BEGIN CERTIFICATE-----\ngarbage"), 0o600)
	os.Chtimes(certPath, t0.Add(2*time.Minute), t0.Add(2*time.Minute))
	if served() != Hash(second) || f.Failures.Load() == 0 {
		t.Fatal("a broken file replaced the served certificate")
	}
	_, _, third := writePair(t, dir, "three.example", t0.Add(3*time.Minute))
	if served() != Hash(third) {
		t.Fatal("not reloaded after the broken write was fixed")
	}
	if _, err := NewFiles(filepath.Join(dir, "missing.pem"), keyPath, FilesOptions{}); err == nil {
		t.Fatal("a missing file accepted")
	}
}
