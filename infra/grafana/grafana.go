// Package grafana holds a Grafana dashboard of quiccast's /metrics
// (quiccast.json: import it in Grafana, pick the Prometheus data source).
package grafana

import _ "embed"

// Dashboard is quiccast.json.
//
//go:embed quiccast.json
var Dashboard []byte
