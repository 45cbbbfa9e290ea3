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
// as their disconnect advisories come, and after every policy change closes those
// holding a grant the new policy does not give
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
)

// passDelays are the waits before the passes that follow a policy change, each
// closing the remembered connections the policy then stored withdraws a grant from:
// a second after the change, so that the answer to the request that made it, on
// its way to a connection that may be among those closed, is delivered first (at
// once, the requester's connection was often closed under it, and it was told the
// change may not have been made); 5 s later, for one admitted under the old policy
// while the change was being applied, which may not have been on its server yet at
// the first; and then, only while some could not be closed (a server that did not
// answer: paused, or cut off and not yet known gone), later again.
var passDelays = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute}

// followGrants closes, after every policy change, the connections this instance
// admitted holding a grant the new policy does not give (passDelays). Each pass
// judges by the policy stored when it runs, and a change starts the passes over, so
// that a change made during them is not judged against one it did not follow (a
// policy allowing anonymous connections between two that do not).
func (s *Service) followGrants() {
	defer s.wg.Done()
	prev := s.policy.Load()
	next := len(passDelays) // no pass due
	var due <-chan time.Time
	for {
		changed := s.policy.Changed()
		if pol := s.policy.Load(); pol != prev {
			// The passes start over, but a first pass already due stays due: a
			// policy put again and again within its delay would put it off for good.
			if next != 0 || due == nil {
				next, due = 0, nil
			}
			prev = pol
		}
		if next < len(passDelays) && due == nil {
			due = time.After(passDelays[next])
		}
		select {
		case <-changed:
		case <-s.bg.Done():
			return
		case <-due:
			due = nil
			failed := s.endWithdrawn(s.bg, next > 0)
			next++
			if next >= 2 && failed == 0 {
				next = len(passDelays)
			}
		}
	}
}

// endWithdrawn closes the remembered connections the current policy withdraws a
// grant from, and returns how many could not be closed (kept for the next pass). A
// connection its server no longer holds is forgotten, but only in a later pass: in
// the first its admission may still be on the way. A server that does not answer in
// time is not asked again in this pass: each kick would wait kickWait.
func (s *Service) endWithdrawn(ctx context.Context, later bool) (failed int) {
	ended, unanswered := 0, 0
	stuck := map[string]bool{}
	var lastErr error
	for _, c := range s.admitted.withdrawnBy(s.policy.Load()) {
		if ctx.Err() != nil {
			return failed
		}
		if stuck[c.server] {
			failed++
			continue
		}
		gone, err := s.kick(ctx, c.server, c.cid)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			// Its server is gone, and the connection with it; or nobody
			// exports the subject (warned below).
			unanswered++
			s.admitted.forget(c.server, c.cid)
		case err != nil:
			failed++
			lastErr = err
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				stuck[c.server] = true
			}
		case !gone:
			ended++
			s.admitted.forget(c.server, c.cid)
		case later:
			s.admitted.forget(c.server, c.cid)
		}
	}
	if failed > 0 && ctx.Err() == nil {
		s.log.Warn("the policy withdrew grants from admitted connections that could not be closed now; they are tried again, and keep the grants until closed or reconnected",
			"connections", failed, "servers_not_answering", len(stuck), "err", lastErr)
	}
	if unanswered > 0 && ended == 0 {
		s.log.Warn("the policy withdrew grants from admitted connections, but no server answered the request to close them: unless their servers are gone, they keep them until they reconnect (configure the kick export, docs/architecture.md)",
			"subject", "$SYS.REQ.SERVER.*.KICK", "connections", unanswered)
	}
	if ended > 0 {
		s.log.Info("closed the connections holding grants the policy withdrew; they are admitted again under it, or refused", "connections", ended)
	}
	return failed
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
