package edge

import (
	"errors"
	"fmt"

	"github.com/quiccast/quiccast/shared/acme"
)

// newACME prepares the ACME certificate of -acme-domain for HTTPS on
// Listen and for HTTP/3; New starts it once Listen is bound, because the
// CA's TLS-ALPN-01 check connects there.
func (n *Node) newACME() error {
	cfg := n.cfg.ACME
	if n.cfg.TLSCert != "" || n.cfg.TLSKey != "" {
		return errors.New("edge: -acme-domain and -tls-cert are exclusive: choose one source of certificates")
	}
	cfg.Listen = n.cfg.Listen
	cfg.Logger = n.log
	m, err := acme.New(cfg)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	n.acme, n.certs = m, m
	return nil
}
