package wire

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"time"
)

// RequestInfo is the part of the server-written Nats-Request-Info header that Roster
// uses. The NATS server writes it on requests that cross a service import with
// share: true; a client cannot forge it on those subjects.
type RequestInfo struct {
	Account    string `json:"acc,omitempty"`
	Host       string `json:"host,omitempty"`
	ID         uint64 `json:"id,omitempty"`
	User       string `json:"user,omitempty"`
	Name       string `json:"name,omitempty"`
	Lang       string `json:"lang,omitempty"`
	Version    string `json:"ver,omitempty"`
	Server     string `json:"server,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	Kind       string `json:"kind,omitempty"`
	ClientType string `json:"client_type,omitempty"`
	// Start is when the connection was accepted.
	Start *time.Time `json:"start,omitempty"`
}

// ParseRequestInfo decodes a Nats-Request-Info header value. It returns nil when the
// header is absent or malformed.
func ParseRequestInfo(v string) *RequestInfo {
	if v == "" {
		return nil
	}
	var ri RequestInfo
	if json.Unmarshal([]byte(v), &ri) != nil {
		return nil
	}
	return &ri
}

// ConnectionKey names the client connection that made a request, unique across a
// cluster and across restarts: connection ids are unique only per server process —
// a restarted server counts from 1 again under the same name, so a client that
// reconnects can get the id its lost connection had — hence the connection's start
// time as well (server/id/start, the start in nanoseconds, base 36).
func (ri *RequestInfo) ConnectionKey() string {
	if ri == nil || ri.ID == 0 {
		return ""
	}
	key := ri.Server + "/" + strconv.FormatUint(ri.ID, 10)
	if ri.Start != nil {
		key += "/" + strconv.FormatInt(ri.Start.UnixNano(), 36)
	}
	return key
}

// Transport maps the NATS client type to Roster's $Transport values.
func (ri *RequestInfo) Transport() string {
	if ri == nil {
		return ""
	}
	switch strings.ToLower(ri.ClientType) {
	case "nats", "":
		return "TCP"
	case "websocket":
		return "WEBSOCKET"
	case "mqtt":
		return "MQTT"
	default:
		return "OTHER"
	}
}

// ClientIP returns the client's address without a port.
func (ri *RequestInfo) ClientIP() string {
	if ri == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(ri.Host); err == nil {
		return host
	}
	return ri.Host
}
