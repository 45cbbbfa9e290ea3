package registry

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// authFixed lists the fixed properties an authenticator may set or change; the others
// ($SessionId, $Principal, $Roles, $ClientIP, $Transport, $StartTime, $ServerName)
// come only from the registry and the server-written request info.
var authFixed = []string{
	sessions.PropClientType, sessions.PropConnector, sessions.PropCountry, sessions.PropLanguage,
	sessions.PropLatitude, sessions.PropLongitude, sessions.PropGatewayType, sessions.PropGatewayID,
}

// fixedProperties builds the fixed properties of a new session. What cannot be
// determined is empty ("NaN" for latitude and longitude).
func fixedProperties(id, principal string, roles []string, info *wire.RequestInfo, start time.Time, req *wire.SessionOpenRequest) map[string]string {
	nan := strconv.FormatFloat(math.NaN(), 'f', -1, 64)
	m := map[string]string{
		sessions.PropSessionID:  id,
		sessions.PropPrincipal:  principal,
		sessions.PropRoles:      filter.RolesToString(roles),
		sessions.PropClientIP:   info.ClientIP(),
		sessions.PropClientType: clientType(info),
		sessions.PropTransport:  info.Transport(),
		sessions.PropStartTime:  strconv.FormatInt(start.UnixMilli(), 10),
		sessions.PropServerName: "",
		sessions.PropConnector:  "",
		sessions.PropCountry:    "",
		sessions.PropLanguage:   "",
		sessions.PropLatitude:   nan,
		sessions.PropLongitude:  nan,
	}
	if info != nil {
		m[sessions.PropServerName] = info.Server
	}
	if req.GatewayType != "" {
		m[sessions.PropGatewayType] = req.GatewayType
		m[sessions.PropGatewayID] = req.GatewayID
	}
	return m
}

// clientType maps the client library named in the connection's CONNECT to the
// $ClientType values of seed 002, extended with the NATS client languages.
func clientType(info *wire.RequestInfo) string {
	if info == nil {
		return ""
	}
	switch strings.ToLower(info.Lang) {
	case "":
		return ""
	case "go":
		return "GO"
	case "java":
		return "JAVA"
	case "python", "python3", "python2":
		return "PYTHON"
	case "c":
		return "C"
	case "c#", ".net", "dotnet", ".net core":
		return "DOTNET"
	case "nats.js", "node", "javascript", "nats.ws", "deno", "bun":
		if info.Transport() == "WEBSOCKET" {
			return "JAVASCRIPT_BROWSER"
		}
		return "JAVASCRIPT"
	case "rust":
		return "RUST"
	default:
		return "OTHER"
	}
}

// checkProperty applies the key syntax and the length limits to one user property.
func (s *Service) checkProperty(key, value string) error {
	if err := sessions.ValidateKey(key); err != nil {
		return err
	}
	if len(key) > s.cfg.Limits.KeyLength {
		return wire.Errorf(wire.CodeLimitExceeded, "property key %.32q… is %d bytes; the key length limit is %d", key, len(key), s.cfg.Limits.KeyLength)
	}
	if len(value) > s.cfg.Limits.ValueLength {
		return wire.Errorf(wire.CodeLimitExceeded, "property %q: value is %d bytes; the value length limit is %d", key, len(value), s.cfg.Limits.ValueLength)
	}
	return nil
}

// checkUserProperties checks a whole set of user properties.
func (s *Service) checkUserProperties(props map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(props)) {
		if err := s.checkProperty(k, props[k]); err != nil {
			return err
		}
	}
	if len(props) > s.cfg.Limits.Properties {
		return wire.Errorf(wire.CodeLimitExceeded, "%d user properties; the limit of properties per session is %d", len(props), s.cfg.Limits.Properties)
	}
	return nil
}

// splitAuthProperties separates what the authenticator returned into user properties
// and the fixed properties it may set; it refuses any other $ key.
func splitAuthProperties(props map[string]string) (user, fixed map[string]string, err error) {
	user = map[string]string{}
	fixed = map[string]string{}
	for k, v := range props {
		if strings.HasPrefix(k, "$") {
			if !slices.Contains(authFixed, k) {
				return nil, nil, wire.Errorf(wire.CodeInternal, "authenticator set fixed property %q", k)
			}
			fixed[k] = v
			continue
		}
		user[k] = v
	}
	return user, fixed, nil
}

// applyChanges sets and removes user properties of rec, returning the keys whose
// value changed.
func applyChanges(rec *sessions.Record, set map[string]string, remove []string) []string {
	var changed []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if old, ok := rec.User[k]; !ok || old != set[k] {
			rec.User[k] = set[k]
			changed = append(changed, k)
		}
	}
	for _, k := range remove {
		if _, ok := rec.User[k]; ok {
			delete(rec.User, k)
			changed = append(changed, k)
		}
	}
	return changed
}
