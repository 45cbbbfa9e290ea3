package auth

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/policy"
)

// Grants withdrawn from admitted connections. NATS fixes a connection's permissions
// when the callout admits it, and keeps them for as long as the connection lasts:
// the publish to open_gateway of a principal whose roles had GATEWAY_SESSION, the
// development relaxations (_INBOX.>, $SRV.>), admission itself for an anonymous
// connection. A policy change that withdrew one of those did not reach the
// connections admitted before it, which kept it for good (a gateway whose grant was
// revoked went on marking its users' sessions as its own). The server keeps nothing
// of the callout's answer that a listing shows (not the user JWT, not its tags; its
// name is the connection key), so each instance remembers the connections it
// admitted with such a grant (server id, connection id, what it gave), forgets them
// as their disconnect advisories come, and on a policy change that withdraws a grant
// (withdraws) closes those holding one the new policy does not give
// ($SYS.REQ.SERVER.<id>.KICK, which the system account exports to the services
// account: pkg/embedded, deploy/nats/nats.conf). nats.go reconnects, and the callout
// admits the connection again under the new policy, or refuses it. An instance that
// restarted has forgotten the connections it admitted before: those keep their
// grants until they reconnect.

// connGrants is what the callout gave a connection that a policy change may withdraw.
type connGrants struct {
	anonymous        bool
	gateway          bool
	sharedInbox      bool
	serviceDiscovery bool
	roles            []string // the principal's, for gateway
}

func (g connGrants) any() bool {
	return g.anonymous || g.gateway || g.sharedInbox || g.serviceDiscovery
}

// grantsOf returns what a connection admitted anonymously or not, whose principal has
// roles, is given under pol that a change may withdraw.
func grantsOf(pol *policy.Policy, anonymous bool, roles []string) connGrants {
	g := connGrants{anonymous: anonymous, roles: roles}
	if pol != nil {
		g.gateway = pol.Allowed(roles, policy.GatewaySession, "")
		g.sharedInbox = pol.Connections.SharedInbox
		g.serviceDiscovery = pol.Connections.ServiceDiscovery
	}
	return g
}

// withdrawn reports whether pol withdraws a grant of g.
func (g connGrants) withdrawn(pol *policy.Policy) bool {
	if pol == nil {
		return g.any()
	}
	roles := g.roles
	if g.anonymous {
		roles = pol.Anonymous.Roles
	}
	return g.anonymous && !pol.Anonymous.Allowed ||
		g.sharedInbox && !pol.Connections.SharedInbox ||
		g.serviceDiscovery && !pol.Connections.ServiceDiscovery ||
		g.gateway && !pol.Allowed(roles, policy.GatewaySession, "")
}

// withdraws reports whether going from old to pol takes from some connection a
// grant it may have been admitted with.
func withdraws(old, pol *policy.Policy) bool {
	if old == nil {
		return false // nothing was admitted with a grant
	}
	if pol == nil {
		return true
	}
	if old.Anonymous.Allowed && !pol.Anonymous.Allowed ||
		old.Connections.SharedInbox && !pol.Connections.SharedInbox ||
		old.Connections.ServiceDiscovery && !pol.Connections.ServiceDiscovery {
		return true
	}
	if old.Allowed(old.Anonymous.Roles, policy.GatewaySession, "") && !pol.Allowed(pol.Anonymous.Roles, policy.GatewaySession, "") {
		return true
	}
	// GATEWAY_SESSION is not granted per name: a set of roles has it when one of
	// them does, so it is withdrawn from some set only if from some one role.
	for role := range old.Roles {
		if old.Allowed([]string{role}, policy.GatewaySession, "") && !pol.Allowed([]string{role}, policy.GatewaySession, "") {
			return true
		}
	}
	return false
}

// maxAdmitted bounds the connections an instance remembers (admitted): past it, one
// admitted with a grant is not remembered, and keeps the grant until it reconnects.
const maxAdmitted = 1 << 20

// admittedConn is a connection the instance admitted with a grant a change may
// withdraw.
type admittedConn struct {
	server string // the id of the server holding it
	cid    uint64
	grants connGrants
}

// admitted is what an instance remembers of the connections it admitted.
type admitted struct {
	mu    sync.Mutex
	conns map[string]admittedConn // by server id and connection id
	full  bool                    // warned that maxAdmitted was reached
}

func connID(server string, cid uint64) string { return server + "/" + strconv.FormatUint(cid, 10) }

// remember records a connection admitted with g (nothing when g holds nothing a
// change may withdraw); it reports false when the table is full.
func (a *admitted) remember(server string, cid uint64, g connGrants) bool {
	if !g.any() || server == "" || cid == 0 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conns == nil {
		a.conns = map[string]admittedConn{}
	}
	if len(a.conns) >= maxAdmitted {
		first := !a.full
		a.full = true
		return !first
	}
	a.conns[connID(server, cid)] = admittedConn{server: server, cid: cid, grants: g}
	return true
}

func (a *admitted) forget(server string, cid uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conns, connID(server, cid))
	if len(a.conns) < maxAdmitted {
		a.full = false
	}
}

// withdrawnBy returns the remembered connections pol withdraws a grant from.
func (a *admitted) withdrawnBy(pol *policy.Policy) []admittedConn {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []admittedConn
	for _, c := range a.conns {
		if c.grants.withdrawn(pol) {
			out = append(out, c)
		}
	}
	return out
}

// forgetDisconnected subscribes to the callout account's disconnect advisories and
// forgets the connections they report.
func (s *Service) forgetDisconnected() error {
	sub, err := s.nc.Subscribe("$SYS.ACCOUNT."+s.cfg.Callout.Account+".DISCONNECT", func(m *nats.Msg) {
		var ev struct {
			Server struct {
				ID string `json:"id"`
			} `json:"server"`
			Client struct {
				ID uint64 `json:"id"`
			} `json:"client"`
		}
		if json.Unmarshal(m.Data, &ev) == nil {
			s.admitted.forget(ev.Server.ID, ev.Client.ID)
		}
	})
	if err != nil {
		return err
	}
	s.disconnects = sub
	return nil
}

const (
	// kickWait bounds the wait for a server's answer to a kick.
	kickWait = 2 * time.Second
	// secondPassAfter is when the connections a change withdraws a grant from are
	// closed a second time: one admitted under the old policy while the change was
	// being applied may not have been on its server yet at the first.
	secondPassAfter = 5 * time.Second
)

// followGrants closes, after every policy change that withdraws a connection grant,
// the connections this instance admitted holding one the new policy does not give.
func (s *Service) followGrants() {
	defer s.wg.Done()
	prev := s.policy.Load()
	for {
		changed := s.policy.Changed()
		pol := s.policy.Load()
		if pol != prev && withdraws(prev, pol) {
			s.endWithdrawn(s.bg)
		}
		prev = pol
		select {
		case <-changed:
		case <-s.bg.Done():
			return
		}
	}
}

// endWithdrawn closes, twice (secondPassAfter), the remembered connections the
// current policy withdraws a grant from.
func (s *Service) endWithdrawn(ctx context.Context) {
	for pass := range 2 {
		if pass > 0 {
			select {
			case <-time.After(secondPassAfter):
			case <-ctx.Done():
				return
			}
		}
		ended, unanswered := 0, 0
		for _, c := range s.admitted.withdrawnBy(s.policy.Load()) {
			gone, err := s.kick(ctx, c.server, c.cid)
			switch {
			case errors.Is(err, nats.ErrNoResponders):
				// Its server is gone, and the connection with it; or nobody
				// exports the subject (warned below).
				unanswered++
				s.admitted.forget(c.server, c.cid)
			case err != nil:
				if ctx.Err() == nil {
					s.log.Warn("the policy withdrew grants from admitted connections, which could not be closed: they keep them until they reconnect (configure the kick export, docs/architecture.md)",
						"server", c.server, "cid", c.cid, "err", err)
				}
				return
			case !gone:
				ended++
				s.admitted.forget(c.server, c.cid)
			case pass > 0:
				s.admitted.forget(c.server, c.cid)
			}
		}
		if unanswered > 0 && ended == 0 {
			s.log.Warn("the policy withdrew grants from admitted connections, but no server answered the request to close them: unless their servers are gone, they keep them until they reconnect (configure the kick export, docs/architecture.md)",
				"subject", "$SYS.REQ.SERVER.*.KICK", "connections", unanswered)
		}
		if ended > 0 {
			s.log.Info("closed the connections holding grants the policy withdrew; they are admitted again under it, or refused", "connections", ended)
		}
	}
}

// kick closes connection cid of the server whose id is server; gone reports that
// the server holds no such connection.
func (s *Service) kick(ctx context.Context, server string, cid uint64) (gone bool, err error) {
	body, _ := json.Marshal(struct {
		CID uint64 `json:"cid"`
	}{cid})
	rctx, cancel := context.WithTimeout(ctx, kickWait)
	defer cancel()
	m, err := s.nc.RequestWithContext(rctx, "$SYS.REQ.SERVER."+server+".KICK", body)
	if err != nil {
		return false, err
	}
	var a struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if json.Unmarshal(m.Data, &a) == nil && a.Error != nil {
		if strings.Contains(a.Error.Description, "no such client") {
			return true, nil
		}
		return false, errors.New(a.Error.Description)
	}
	return false, nil
}
