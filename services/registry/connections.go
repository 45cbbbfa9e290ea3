package registry

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// Lost connections nobody reported. The DISCONNECT advisory moves the sessions of a
// closed connection to RECOVERING, but an advisory is a plain message: nobody
// receives the ones published while no registry instance runs or while an instance is
// cut off from NATS, and a server that stops or dies publishes none for the
// connections it held. So each instance also asks the servers, through the account
// connection listing ($SYS.REQ.ACCOUNT.<account>.CONNZ, which the system account
// exports to SERVICES), about the connections ACTIVE sessions are bound to:
//
//   - every ConnCheckInterval it asks every server for its identity (a listing of a
//     connection id no server reaches, so the answer is a few hundred bytes);
//   - when a server answers for the first time, or with a new identity (it
//     restarted), and after the instance's own connection came back, it lists that
//     server's connections (sorted by id, paged): a bound connection absent from the
//     page whose id range holds it was closed; a connection closing meanwhile shifts
//     the later pages, so one whose id falls between two pages (or past the last) is
//     asked about alone, and only that answer counts;
//   - a server that leaves the question unanswered for ServerGoneAfter while other
//     servers answer is taken for gone, and with it its connections.
//
// A lost connection goes through the same path as an advisory (tracker.disconnected):
// its ACTIVE sessions become RECOVERING, with a DISCONNECTED event, and close unless
// resumed within the reconnect window.

// connzSubject is the request subject of an account's connection listing.
func connzSubject(account string) string { return "$SYS.REQ.ACCOUNT." + account + ".CONNZ" }

const (
	// connzPage is the page size of a server's listing: a connection's entry is a few
	// hundred bytes, and a page must stay under the server's max_payload.
	connzPage = 256
	// connzNoSuchID is a connection id no server reaches: asking for it costs a server
	// the least and still returns its identity.
	connzNoSuchID = uint64(math.MaxUint64)
	// connzWait bounds the wait for the servers' answers to one question.
	connzWait = 2 * time.Second
)

// connzRequest is the part of the server's CONNZ request options the registry uses.
type connzRequest struct {
	ServerName string `json:"server_name,omitempty"`
	CID        uint64 `json:"cid,omitempty"`
	Sort       string `json:"sort,omitempty"`
	Offset     int    `json:"offset,omitempty"`
	Limit      int    `json:"limit,omitempty"`
}

// connzResponse is the part of the server's answer the registry reads.
type connzResponse struct {
	Server struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	} `json:"server"`
	Data *struct {
		Total int `json:"total"`
		Conns []struct {
			CID   uint64    `json:"cid"`
			Start time.Time `json:"start"`
		} `json:"connections"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

// boundConn is a connection ACTIVE sessions are bound to, from its key
// (wire.RequestInfo.ConnectionKey: server/cid/start).
type boundConn struct {
	key    string
	server string
	cid    uint64
	start  int64 // unix nanoseconds; 0 when the key has none
}

// parseConnKey splits a connection key; a server name may itself contain "/".
func parseConnKey(key string) (boundConn, bool) {
	c := boundConn{key: key}
	rest, last, ok := cutLast(key)
	if !ok {
		return c, false
	}
	// server/cid/start, or server/cid from a server that sent no start time.
	if server, cid, ok := cutLast(rest); ok {
		if id, err := strconv.ParseUint(cid, 10, 64); err == nil {
			if start, err := strconv.ParseInt(last, 36, 64); err == nil {
				c.server, c.cid, c.start = server, id, start
				return c, server != "" && id > 0
			}
		}
	}
	id, err := strconv.ParseUint(last, 10, 64)
	c.server, c.cid = rest, id
	return c, err == nil && rest != "" && id > 0
}

func cutLast(s string) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// serverSeen is what an instance knows of a server holding bound connections.
type serverSeen struct {
	id       string    // its identity at its last answer ("" before the first)
	lastSeen time.Time // its last answer, or when the instance first needed one or could ask again after a cut
}

// connChecker runs the checks of one instance (one goroutine: no locking).
type connChecker struct {
	t       *tracker
	servers map[string]*serverSeen
	// unlisted holds the accounts whose listing nobody answers (the export is not
	// configured), warned about once.
	unlisted map[string]bool
	recheck  chan struct{} // the instance's connection came back: list every server again
	// paused is set while the instance is cut off from NATS: it asks no server
	// anything then, so that time does not count as any server's silence.
	paused bool
}

func newConnChecker(t *tracker) *connChecker {
	return &connChecker{t: t, servers: map[string]*serverSeen{}, unlisted: map[string]bool{}, recheck: make(chan struct{}, 1)}
}

// relist asks for every server to be listed again at the next round.
func (c *connChecker) relist() {
	select {
	case c.recheck <- struct{}{}:
	default:
	}
}

func (c *connChecker) run(ctx context.Context) {
	tick := time.NewTicker(c.t.s.cfg.ConnCheckInterval)
	defer tick.Stop()
	all := false
	for {
		if c.t.isBlind() {
			all = true // it may have missed advisories: list every server once back
			c.paused = true
		} else {
			c.round(ctx, all)
			all = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.recheck:
			all = true
		}
	}
}

// round checks the connections ACTIVE sessions are bound to; all lists every server
// that answers, not only the new and the restarted ones.
func (c *connChecker) round(ctx context.Context, all bool) {
	if c.paused {
		// Unasked while cut off: each server's silence counts from now.
		now := c.t.s.cfg.Now()
		for _, seen := range c.servers {
			seen.lastSeen = now
		}
		c.paused = false
	}
	bound := c.t.boundConnections()
	referenced := map[string]bool{}
	for account, conns := range bound {
		byServer := map[string][]boundConn{}
		for _, bc := range conns {
			byServer[bc.server] = append(byServer[bc.server], bc)
			referenced[bc.server] = true
		}
		answered, err := c.identities(ctx, account, byServer)
		if err != nil {
			if ctx.Err() == nil {
				c.t.s.log.Debug("asking the servers for their identities", "account", account, "err", err)
			}
			continue
		}
		if len(answered) == 0 {
			continue // no server answered at all: nothing can be told apart
		}
		now := c.t.s.cfg.Now()
		for server, conns := range byServer {
			seen := c.servers[server]
			if seen == nil {
				seen = &serverSeen{lastSeen: now}
				c.servers[server] = seen
			}
			id, ok := answered[server]
			switch {
			case ok:
				relist := all || seen.id != id
				seen.id, seen.lastSeen = id, now
				if relist && !c.checkServer(ctx, account, server, conns) {
					seen.id = "" // not listed: list it at the next round
				}
			case now.Sub(seen.lastSeen) >= c.t.s.cfg.ServerGoneAfter:
				c.t.s.log.Warn("a NATS server holding session connections has not answered; its connections count as lost",
					"server", server, "since", seen.lastSeen, "connections", len(conns))
				c.lost(ctx, conns, false)
			}
		}
	}
	for server := range c.servers {
		if !referenced[server] {
			delete(c.servers, server)
		}
	}
}

// identities asks every server for its identity in account's listing and returns the
// names and identities of those that answered. It stops waiting once every server in
// want has answered.
func (c *connChecker) identities(ctx context.Context, account string, want map[string][]boundConn) (map[string]string, error) {
	nc := c.t.s.nc
	inbox := nc.NewRespInbox()
	msgs := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	body, _ := json.Marshal(connzRequest{CID: connzNoSuchID})
	if err := nc.PublishRequest(connzSubject(account), inbox, body); err != nil {
		return nil, err
	}
	timer := time.NewTimer(connzWait)
	defer timer.Stop()
	answered := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return answered, nil
		case m := <-msgs:
			if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
				if !c.unlisted[account] {
					c.unlisted[account] = true
					c.t.s.log.Warn("nobody answers the account's connection listing: sessions whose connection closed unreported stay ACTIVE until their timeout (configure the export, docs/architecture.md)",
						"subject", connzSubject(account))
				}
				return nil, nats.ErrNoResponders
			}
			var r connzResponse
			if json.Unmarshal(m.Data, &r) != nil || r.Error != nil || r.Server.Name == "" {
				continue
			}
			delete(c.unlisted, account)
			answered[r.Server.Name] = r.Server.ID
			if allAnswered(want, answered) {
				return answered, nil
			}
		}
	}
}

func allAnswered(want map[string][]boundConn, answered map[string]string) bool {
	for server := range want {
		if _, ok := answered[server]; !ok {
			return false
		}
	}
	return true
}

// checkServer lists server's connections in account and moves the sessions of each
// bound connection it confirms gone to RECOVERING. Any failure to ask ends the check
// without a conclusion about the connections not yet settled, and it reports false.
func (c *connChecker) checkServer(ctx context.Context, account, server string, conns []boundConn) bool {
	open := map[uint64]int64{}
	// Pages come sorted by id, each a snapshot of its range: a bound connection
	// whose id falls inside a page's range and is absent from it was closed. A
	// connection closing between two requests shifts the later pages, so an id
	// between one page's last and the next page's first (or past the last page) may
	// have been skipped: only those are asked about alone.
	var pages [][2]uint64
	for offset := 0; ; {
		r, err := c.ask(ctx, account, connzRequest{ServerName: server, Sort: "cid", Offset: offset, Limit: c.t.s.cfg.connzPage})
		if err != nil {
			c.t.s.log.Debug("listing a server's connections", "server", server, "err", err)
			return false
		}
		page := r.Data.Conns
		for _, ci := range page {
			open[ci.CID] = ci.Start.UnixNano()
		}
		if len(page) > 0 {
			first := page[0].CID
			if offset == 0 {
				first = 0 // the first page starts at the lowest id there is
			}
			pages = append(pages, [2]uint64{first, page[len(page)-1].CID})
		}
		offset += len(page)
		if len(page) == 0 || offset >= r.Data.Total {
			break
		}
	}
	covered := func(cid uint64) bool {
		for _, p := range pages {
			if p[0] <= cid && cid <= p[1] {
				return true
			}
		}
		return false
	}
	var lost []boundConn
	defer func() { c.lost(ctx, lost, true) }()
	for _, bc := range conns {
		start, listed := open[bc.cid]
		switch {
		case listed && sameStart(bc, start):
			continue // open
		case listed, covered(bc.cid):
			lost = append(lost, bc) // another connection under its id (a restart), or closed
			continue
		}
		r, err := c.ask(ctx, account, connzRequest{ServerName: server, CID: bc.cid})
		if err != nil {
			c.t.s.log.Debug("asking a server about a connection", "server", server, "cid", bc.cid, "err", err)
			return false
		}
		alive := false
		for _, ci := range r.Data.Conns {
			alive = alive || (ci.CID == bc.cid && sameStart(bc, ci.Start.UnixNano()))
		}
		if !alive {
			lost = append(lost, bc)
		}
	}
	return true
}

// lost moves the ACTIVE sessions bound to conns to RECOVERING, as the connections'
// advisories would have, as many connections at once as for advisories. confirmed
// tells connections a listing found closed from those of a server taken for gone,
// which may be alive.
func (c *connChecker) lost(ctx context.Context, conns []boundConn, confirmed bool) {
	workers := newBounded(disconnectWorkers)
	defer workers.wait()
	for _, bc := range conns {
		if !workers.run(ctx, func() { c.t.disconnected(ctx, bc.key, confirmed) }) {
			return
		}
	}
}

func sameStart(bc boundConn, start int64) bool { return bc.start == 0 || bc.start == start }

// ask sends one listing request to the one server it names and returns the answer.
func (c *connChecker) ask(ctx context.Context, account string, req connzRequest) (*connzResponse, error) {
	body, _ := json.Marshal(req)
	rctx, cancel := context.WithTimeout(ctx, connzWait)
	defer cancel()
	m, err := c.t.s.nc.RequestWithContext(rctx, connzSubject(account), body)
	if err != nil {
		return nil, err
	}
	var r connzResponse
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, err
	}
	switch {
	case r.Error != nil:
		return nil, errors.New(r.Error.Description)
	case r.Data == nil || r.Server.Name != req.ServerName:
		return nil, errors.New("unexpected connection listing answer")
	}
	return &r, nil
}

// boundConnections returns the connections ACTIVE sessions are bound to, by account,
// leaving out sessions whose record names no account (written before records did).
func (t *tracker) boundConnections() map[string][]boundConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string][]boundConn{}
	for key, ids := range t.byConn {
		for id := range ids {
			e := t.sessions[id]
			if e == nil || e.rec.State != wire.StateActive || e.rec.Account == "" {
				continue
			}
			if bc, ok := parseConnKey(key); ok {
				out[e.rec.Account] = append(out[e.rec.Account], bc)
			}
			break
		}
	}
	return out
}

// isBlind reports whether the instance is cut off from NATS or still catching up.
func (t *tracker) isBlind() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blind
}
