package registry

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/seed-3c836eab/roster/pkg/endpoint"
	"github.com/seed-3c836eab/roster/pkg/filter"
	"github.com/seed-3c836eab/roster/pkg/policy"
	"github.com/seed-3c836eab/roster/pkg/sessions"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// caller authenticates the session a request names in its headers: it must exist, be
// open, and the token must match. It counts as activity of that session.
func (s *Service) caller(ctx context.Context, c *endpoint.Call) (*sessions.Record, error) {
	if c.SessionID == "" {
		return nil, wire.Errorf(wire.CodeUnauthenticated, "the %s header is required", wire.HeaderSession)
	}
	if err := s.track.waitLoaded(ctx); err != nil {
		return nil, err
	}
	rec, err := s.st.get(ctx, c.SessionID)
	if err != nil {
		return nil, err
	}
	if rec.Closed() {
		return nil, rec.ClosedError()
	}
	if err := rec.CheckToken(c.Token); err != nil {
		return nil, err
	}
	return rec, s.active(ctx, rec)
}

// active counts a request as activity of an authenticated session — unless the
// session's time is already up (its timeout or reconnect window passed while no
// instance closed it yet, say while none ran): then the session is closed now and
// the request gets session_closed, instead of the request reviving it. A close that
// cannot be written, or a record that cannot be read after it, fails the request
// (unavailable) without counting it: counted, it revived the overdue session.
func (s *Service) active(ctx context.Context, rec *sessions.Record) error {
	if s.cfg.beforeActive != nil {
		s.cfg.beforeActive(ctx, rec.ID)
	}
	if !s.track.touch(rec) {
		return nil
	}
	// The close is the registry's own transition, not the caller's work: the
	// request's deadline does not cut it short (expire bounds its attempts itself),
	// and a close left unfinished would not be retried.
	dctx, done := endpoint.WithoutDeadline(ctx)
	defer done()
	if err := s.track.expire(dctx, rec.ID); err != nil {
		return err
	}
	r, err := s.st.get(dctx, rec.ID)
	if err != nil {
		return err
	}
	if r.Closed() {
		return r.ClosedError()
	}
	s.track.activity(rec.ID) // activity arrived meanwhile: the session lives on
	return nil
}

// heldCaller authenticates the caller against the record this instance holds, without
// a read, when that record accepts the headers; otherwise it reads the record, as
// caller does. Keepalive uses it (it only records activity, which a copy milliseconds
// old cannot misuse). So do changes of the own session: the change is a
// compare-and-set on the record's revision, which
// succeeds only while the record is still current — a close, a rotated token or any
// other change since has moved the revision, the write fails, and modify reads the
// record again and repeats the check (ownedBy) on it. An answer that writes nothing
// (no change, or an error) proves nothing about the copy, so modify takes it again
// from a fresh read.
func (s *Service) heldCaller(ctx context.Context, c *endpoint.Call) (*sessions.Record, error) {
	if rec := s.track.record(c.SessionID); c.SessionID != "" && rec != nil && !rec.Closed() && rec.CheckToken(c.Token) == nil {
		return rec, s.active(ctx, rec)
	}
	return s.caller(ctx, c)
}

// ownedBy returns the check a change of the caller's own session repeats on every
// record modify reads: the token must still be the session's (it may have been
// rotated since the first read).
func ownedBy(c *endpoint.Call) func(*sessions.Record) error {
	return func(r *sessions.Record) error { return r.CheckToken(c.Token) }
}

// authenticate asks the auth service who the credentials belong to. Its errors
// (unauthenticated, throttled, forbidden, unavailable …) reach the client unchanged.
func (s *Service) authenticate(ctx context.Context, creds *wire.Credentials, props map[string]string, info *wire.RequestInfo) (*wire.AuthenticateResponse, map[string]string, map[string]string, error) {
	var resp wire.AuthenticateResponse
	// The request's context may have no deadline (a client that gave none), or a
	// long one, and a request the auth service took but never answers has no other
	// end. The call (wire.Call, in a client span) passes the earlier of the two on to
	// the auth service.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AuthTimeout)
	defer cancel()
	err := s.svc.Call(ctx, wire.SubjectAuthenticate, nil,
		&wire.AuthenticateRequest{Credentials: creds, Properties: props, Client: info}, &resp)
	if err != nil {
		return nil, nil, nil, err
	}
	if s.cfg.afterAuthenticate != nil {
		s.cfg.afterAuthenticate(ctx)
	}
	// Anonymous sessions have the principal "" (docs/architecture.md,
	// Authenticators); any other authenticator must name one.
	if resp.Principal == "" && resp.Authenticator != "anonymous" {
		return nil, nil, nil, errors.New("auth service admitted a session without a principal")
	}
	user, fixed, err := splitAuthProperties(resp.Properties)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := s.checkUserProperties(user); err != nil {
		return nil, nil, nil, err
	}
	return &resp, user, fixed, nil
}

// open authenticates a new session and stores it.
func (s *Service) open(ctx context.Context, c *endpoint.Call, req *wire.SessionOpenRequest) (*wire.SessionOpenResponse, error) {
	if err := s.checkUserProperties(req.Properties); err != nil {
		return nil, err
	}
	// The bounds are compared in milliseconds: timeout_ms converted to a Duration
	// first would overflow (2^58 ms wraps to 0) and pass them.
	var timeout time.Duration
	switch {
	case req.Permanent && req.TimeoutMS != 0:
		return nil, wire.Errorf(wire.CodeBadRequest, "timeout_ms and permanent exclude each other")
	case req.Permanent:
	case req.TimeoutMS < 0:
		return nil, wire.Errorf(wire.CodeBadRequest, "timeout_ms must not be negative")
	case req.TimeoutMS == 0:
		timeout = s.cfg.DefaultTimeout
	case req.TimeoutMS < s.cfg.MinTimeout.Milliseconds() || req.TimeoutMS > s.cfg.MaxTimeout.Milliseconds():
		return nil, wire.Errorf(wire.CodeBadRequest, "timeout_ms %d is outside [%d, %d]: sessions may ask for %s to %s", req.TimeoutMS, s.cfg.MinTimeout.Milliseconds(), s.cfg.MaxTimeout.Milliseconds(), s.cfg.MinTimeout, s.cfg.MaxTimeout)
	default:
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	if (req.GatewayType == "") != (req.GatewayID == "") {
		return nil, wire.Errorf(wire.CodeBadRequest, "gateway_type and gateway_id go together")
	}
	// They become property values ($GatewayType, $GatewayId), and are bounded as
	// every value is.
	if n := max(len(req.GatewayType), len(req.GatewayID)); n > s.cfg.Limits.ValueLength {
		return nil, wire.Errorf(wire.CodeLimitExceeded, "gateway_type or gateway_id is %d bytes; the value length limit is %d", n, s.cfg.Limits.ValueLength)
	}
	// The limit of sessions per principal is counted from the loaded sessions.
	if err := s.track.waitLoaded(ctx); err != nil {
		return nil, err
	}
	// A gateway's user is known by the address the gateway gives: the auth service
	// throttles by it, and it is the session's $ClientIP.
	info := c.Info()
	if req.ClientIP != "" {
		info = withHost(info, req.ClientIP)
	}
	auth, user, authFixed, err := s.authenticate(ctx, req.Credentials, req.Properties, info)
	if err != nil {
		return nil, err
	}
	if req.Permanent && !s.pol.Allowed(auth.Roles, policy.PermanentSession, "") {
		return nil, wire.Errorf(wire.CodeForbidden, "a permanent session needs %s", policy.PermanentSession)
	}

	now := s.cfg.Now()
	token := newToken()
	rec := &sessions.Record{
		Principal:    auth.Principal,
		Roles:        append([]string{}, auth.Roles...),
		User:         user,
		State:        wire.StateActive,
		TokenHash:    sessions.HashToken(token),
		Connection:   c.Info().ConnectionKey(),
		Account:      connAccount(c.Info()),
		DeliverKey:   deliverKey(c.Info()),
		TimeoutMS:    timeout.Milliseconds(),
		Permanent:    req.Permanent,
		StartTime:    now,
		LastActivity: now,
		UpdatedAt:    now,
	}
	rec.ID = newID()
	release, err := s.track.reserve(auth.Principal, rec.ID, s.cfg.Limits.SessionsPerPrincipal)
	if err != nil {
		return nil, err
	}
	defer release()
	// A client that gave up during the authentication gets no session: one created
	// now would count against its principal's limit until it timed out. From the
	// create on, the open is seen through whatever the deadline (store.create; bound).
	if err := endpoint.Interrupted(ctx, "the registry is stopping"); err != nil {
		return nil, err
	}
	for {
		rec.Fixed = fixedProperties(rec.ID, rec.Principal, rec.Roles, info, now, req)
		maps.Copy(rec.Fixed, authFixed)
		rec.EventSeq, rec.Outbox = 0, nil
		stage(ctx, rec, wire.EventOpened, nil)
		data, err := s.encode(rec)
		if err != nil {
			return nil, err
		}
		rev, err := s.st.create(ctx, rec.ID, data, ttlFor(&s.cfg, rec))
		if errors.Is(err, errConflict) {
			// An id collision: practically impossible, but never reuse an id. The
			// reservation holds until release.
			rec.ID = newID()
			continue
		}
		if err != nil {
			return nil, err
		}
		rec.Revision = rev
		break
	}
	s.track.opened(rec)
	s.publishStaged(rec)
	dctx, done := endpoint.WithoutDeadline(ctx)
	defer done()
	s.track.bound(dctx, rec.Connection)
	return &wire.SessionOpenResponse{Session: rec.Public(), Token: token, ReconnectWindowMS: s.windowMS()}, nil
}

// windowMS is the reconnect window the replies that give a session carry: with the
// session's timeout it bounds how soon the registry may close the session, and so
// release its locks, without the client's doing — which the SDK needs to know when
// it can no longer vouch for them (pkg/client, "Lock").
// Truncated, so never longer than the window; at least 1, since 0 means a registry
// that does not say.
func (s *Service) windowMS() int64 { return max(s.cfg.ReconnectWindow.Milliseconds(), 1) }

// encode renders a record for storage, refusing one over the record size limit.
func (s *Service) encode(rec *sessions.Record) ([]byte, error) {
	return s.encodeLimited(rec, true)
}

// encodeLimited is encode, with the size limit applied only when limited: the limit
// bounds what clients put in a record (open, property updates, a change of principal),
// never the server's own transitions — a record a client filled to the limit must
// still close, expire, disconnect, resume and persist its activity.
func (s *Service) encodeLimited(rec *sessions.Record, limited bool) ([]byte, error) {
	data, err := sessions.Encode(rec)
	if err != nil {
		return nil, err
	}
	if limited && len(data) > s.cfg.Limits.RecordSize {
		return nil, s.recordTooLarge(len(data))
	}
	return data, nil
}

// recordTooLarge is the refusal of a record of n bytes, over the record size limit.
func (s *Service) recordTooLarge(n int) error {
	return wire.Errorf(wire.CodeLimitExceeded, "the session record would be %d bytes; the record size limit is %d", n, s.cfg.Limits.RecordSize)
}

// target returns the record a request names by id: the caller's own when id is empty
// or its own id, otherwise another session, which needs perm.
func (s *Service) target(ctx context.Context, me *sessions.Record, id string, perm policy.Permission) (*sessions.Record, bool, error) {
	if id == "" || id == me.ID {
		return me, true, nil
	}
	if !s.pol.Allowed(me.Roles, perm, "") {
		return nil, false, wire.Errorf(wire.CodeForbidden, "acting on another session needs %s", perm)
	}
	rec, err := s.st.get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if rec.Closed() {
		return nil, false, rec.ClosedError()
	}
	return rec, false, nil
}

// get returns the caller's session or, with VIEW_SESSION, another.
func (s *Service) get(ctx context.Context, c *endpoint.Call, req *wire.SessionGetRequest) (*wire.SessionGetResponse, error) {
	me, err := s.caller(ctx, c)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.target(ctx, me, req.ID, policy.ViewSession)
	if err != nil {
		return nil, err
	}
	return &wire.SessionGetResponse{Session: rec.Public(), ReconnectWindowMS: s.windowMS()}, nil
}

// compile compiles a session filter; a compile that waited for a slot until the
// request's deadline answers as a pass the deadline cut short does.
func compile(ctx context.Context, expr string) (*filter.Filter, error) {
	f, err := filter.CompileContext(ctx, expr)
	if err != nil {
		if ierr := interrupted(ctx); ierr != nil {
			return nil, ierr
		}
		return nil, wire.Errorf(wire.CodeInvalidFilter, "%v", err)
	}
	return f, nil
}

// selector returns whether a record matches expr (every record when empty), closed
// ones only with includeClosed.
func selector(ctx context.Context, expr string, includeClosed bool) (func(*sessions.Record) bool, error) {
	var f *filter.Filter
	if expr != "" {
		var err error
		if f, err = compile(ctx, expr); err != nil {
			return nil, err
		}
	}
	return func(r *sessions.Record) bool {
		return (includeClosed || !r.Closed()) && (f == nil || f.MatchesSplit(r.Fixed, r.User))
	}, nil
}

// eachRecord calls fn with every record of the instance's view, tombstones included,
// and gives up when ctx ends: at the request's deadline (timeout) or when the
// service stops (unavailable). fn evaluates a filter, which can cost milliseconds a
// record: a pass that went on whatever the context ran for as long as the pass
// took, minutes over 100,000 sessions, after its client had given up, and held a
// service being stopped, which waits for its handlers, as long.
func (s *Service) eachRecord(ctx context.Context, fn func(*sessions.Record)) error {
	for i, r := range s.track.records() {
		if i%eachRecordChunk == 0 {
			if err := interrupted(ctx); err != nil {
				return err
			}
		}
		fn(r)
	}
	return nil
}

// eachRecordChunk is how many records eachRecord evaluates between looks at the
// context.
const eachRecordChunk = 64

// interrupted is nil while ctx lasts, and otherwise what a request that stops
// because it ended answers (endpoint.Interrupted).
func interrupted(ctx context.Context) error {
	return endpoint.Interrupted(ctx, "the registry is stopping")
}

// stoppedAt is the error of a change by filter that stopped after done of total
// sessions: the deadline or the stop when ctx ended (a read it cut short failed
// with storage's error), err otherwise. verb is "updating" or "closing".
func stoppedAt(ctx context.Context, err error, verb string, done, total int) error {
	if ierr := interrupted(ctx); ierr != nil {
		err = ierr
	}
	return prefixError(err, "after "+verb+" "+strconv.Itoa(done)+" of "+strconv.Itoa(total)+" sessions: ", "")
}

// matching returns the open records of the in-memory view matching expr, and the
// match itself: a change by filter checks it again on the record it writes, which may
// be newer than the view's copy and no longer match.
func (s *Service) matching(ctx context.Context, expr string) ([]*sessions.Record, func(*sessions.Record) bool, error) {
	match, err := selector(ctx, expr, false)
	if err != nil {
		return nil, nil, err
	}
	var out []*sessions.Record
	err = s.eachRecord(ctx, func(r *sessions.Record) {
		if match(r) {
			out = append(out, r)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	// The check runs on the record a write is about to change; the record's
	// properties are sealed anew once written (tracker.written).
	return out, match, nil
}

// list returns a page of the sessions matching a filter (VIEW_SESSION). It reads the
// instance's in-memory view, which follows the bucket within milliseconds.
func (s *Service) list(ctx context.Context, c *endpoint.Call, req *wire.SessionListRequest) (*wire.SessionListResponse, error) {
	me, err := s.caller(ctx, c)
	if err != nil {
		return nil, err
	}
	if !s.pol.Allowed(me.Roles, policy.ViewSession, "") {
		return nil, wire.Errorf(wire.CodeForbidden, "listing sessions needs %s", policy.ViewSession)
	}
	limit := req.Limit
	switch {
	case limit < 0 || limit > s.cfg.MaxListLimit:
		return nil, wire.Errorf(wire.CodeBadRequest, "limit must be between 1 and %d", s.cfg.MaxListLimit)
	case limit == 0:
		limit = s.cfg.ListLimit
	}
	match, err := selector(ctx, req.Filter, req.IncludeClosed)
	if err != nil {
		return nil, err
	}
	// One pass over the instance's records: count the matches, and keep the limit+1
	// with the lowest ids after the cursor in a max-heap — a page costs
	// O(n log limit), not a sort of every match.
	total := 0
	h := make(byIDDesc, 0, limit+1)
	err = s.eachRecord(ctx, func(r *sessions.Record) {
		if r.Closed() {
			if !req.IncludeClosed {
				return
			}
			r = r.Full() // a compact tombstone: decoded for the filter and the page
		}
		if !match(r) {
			return
		}
		total++
		switch {
		case r.ID <= req.After:
		case len(h) <= limit:
			heap.Push(&h, r)
		case r.ID < h[0].ID:
			h[0] = r
			heap.Fix(&h, 0)
		}
	})
	if err != nil {
		return nil, err
	}
	page := []*sessions.Record(h)
	slices.SortFunc(page, func(a, b *sessions.Record) int { return strings.Compare(a.ID, b.ID) })
	resp := &wire.SessionListResponse{Sessions: make([]*wire.Session, 0, min(len(page), limit)), Total: total}
	if len(page) > limit {
		page = page[:limit]
		resp.Next = page[limit-1].ID
	}
	// The page is one reply, which the server refuses past its max_payload: it
	// stops before the session that would take it there (always holding one, which
	// the record size limit lets fit), and the next page goes on from there.
	budget, size := s.listPageBytes(), 0
	for _, r := range page {
		pub := r.Public()
		n := sessionSizeBound(r)
		if size+n > budget {
			data, err := json.Marshal(pub)
			if err != nil {
				return nil, err
			}
			n = len(data) + 1 // and its comma
		}
		if len(resp.Sessions) > 0 && size+n > budget {
			resp.Next = resp.Sessions[len(resp.Sessions)-1].ID
			break
		}
		size += n
		resp.Sessions = append(resp.Sessions, pub)
	}
	return resp, nil
}

// listReplyHeadroom is what a list reply needs beside its sessions: the total, next
// and the JSON around them.
const listReplyHeadroom = 1 << 10

// listPageBytes bounds the encoded sessions of one list reply: the server's
// max_payload, less the reply's other fields.
func (s *Service) listPageBytes() int {
	mp := s.nc.MaxPayload()
	if mp <= 0 {
		mp = 1 << 20 // NATS's default
	}
	return int(mp) - listReplyHeadroom
}

// sessionSizeBound is an upper bound of the size of rec's public view in JSON, cheap
// to compute: JSON writes no byte of a string as more than six ("\u003c"), and the
// rest — member names, times, numbers — takes less than 512 bytes.
func sessionSizeBound(rec *sessions.Record) int {
	n := len(rec.ID) + len(rec.Principal)
	for _, r := range rec.Roles {
		n += len(r) + 3
	}
	for k, v := range rec.Fixed {
		n += len(k) + len(v) + 6
	}
	for k, v := range rec.User {
		n += len(k) + len(v) + 6
	}
	return 512 + 6*n
}

// byIDDesc is a max-heap of records by id.
type byIDDesc []*sessions.Record

func (h byIDDesc) Len() int           { return len(h) }
func (h byIDDesc) Less(i, j int) bool { return h[i].ID > h[j].ID }
func (h byIDDesc) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *byIDDesc) Push(x any)        { *h = append(*h, x.(*sessions.Record)) }
func (h *byIDDesc) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}

// modify applies fn to the session's record with a compare-and-set, retrying with a
// fresh read when another write won. first, if not nil, is a record just read or,
// for a change of the caller's own session, the instance's copy (heldCaller). check, if
// not nil, marks such a change: it runs on every record before fn, and an answer
// that writes nothing — check's or fn's error, or no change — is taken from a fresh
// read, since only a compare-and-set proves the copy current. fn returns whether it
// changed anything; nothing is written otherwise. A change writes the event of the
// kind given (none when empty) into the record's outbox in the same compare-and-set,
// and publishes it without waiting for the acknowledgement.
func (s *Service) modify(ctx context.Context, id string, first *sessions.Record, check func(*sessions.Record) error, kind wire.SessionEventKind, fn func(*sessions.Record) (bool, error)) (*sessions.Record, bool, error) {
	cur, fresh := first, false
	for {
		if cur == nil {
			var err error
			if cur, err = s.st.get(ctx, id); err != nil {
				return nil, false, err
			}
			fresh = true
		}
		if cur.Closed() {
			return cur, false, cur.ClosedError() // closed for good, whatever the source
		}
		next, data, err := s.prepare(ctx, cur, check, kind, fn)
		if (err != nil || next == nil) && (check != nil || sessions.IsNewerFormat(err)) && !fresh {
			// An answer that writes nothing, from an unproven copy (a copy of a newer
			// version's record may have been written over by an older one since).
			cur = nil
			continue
		}
		if err != nil || next == nil {
			return cur, false, err
		}
		if s.cfg.beforeWrite != nil {
			s.cfg.beforeWrite(ctx, next.ID)
		}
		rev, err := s.st.write(ctx, next.ID, next.Revision, data, ttlFor(&s.cfg, next))
		if errors.Is(err, errConflict) {
			cur = nil
			continue
		}
		if err != nil {
			return cur, false, err
		}
		next.Revision = rev
		s.track.written(next)
		if kind != "" {
			s.publishStaged(next)
		}
		return next, true, nil
	}
}

// prepare applies check and fn to a copy of cur and renders the record to write, with
// its event staged in the outbox; next is nil when fn changed nothing.
func (s *Service) prepare(ctx context.Context, cur *sessions.Record, check func(*sessions.Record) error, kind wire.SessionEventKind, fn func(*sessions.Record) (bool, error)) (next *sessions.Record, data []byte, err error) {
	if check != nil {
		if err := check(cur); err != nil {
			return nil, nil, err
		}
	}
	next = cur.Clone()
	if changed, err := fn(next); err != nil || !changed {
		return nil, nil, err
	}
	next.UpdatedAt = s.cfg.Now()
	if l := s.track.lastActivity(cur.ID); l.After(next.LastActivity) {
		next.LastActivity = l
	}
	if err := s.carryOutbox(ctx, cur, next); err != nil {
		return nil, nil, err
	}
	if kind != "" {
		var keys []string
		if kind == wire.EventUpdated {
			keys = changedKeys(cur.User, next.User)
		}
		stage(ctx, next, kind, keys)
	}
	// The size limit bounds what clients put in a record, not the server's own
	// transitions (encodeLimited). Nor does it refuse an update that leaves the
	// properties no larger, as stored: a record over a limit lowered since it was
	// filled could otherwise not be made smaller, or changed at all.
	if data, err = s.encodeLimited(next, kind == wire.EventPrincipalChanged); err != nil {
		return nil, nil, err
	}
	if kind == wire.EventUpdated && len(data) > s.cfg.Limits.RecordSize && jsonSize(next.User) > jsonSize(cur.User) {
		return nil, nil, s.recordTooLarge(len(data))
	}
	return next, data, nil
}

// update sets and removes user properties: of the caller's session where the policy
// grants MODIFY_OWN_PROPERTIES on each key, or of others with MODIFY_SESSION.
func (s *Service) update(ctx context.Context, c *endpoint.Call, req *wire.SessionUpdateRequest) (*wire.SessionUpdateResponse, error) {
	if len(req.Set) == 0 && len(req.Remove) == 0 {
		return nil, wire.Errorf(wire.CodeBadRequest, "set or remove at least one property")
	}
	if req.ID != "" && req.Filter != "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "name the session by id or by filter, not both")
	}
	// In key order, as at open: in the map's, a request with two bad keys got either
	// one's error, a different one from one send to the next.
	for _, k := range slices.Sorted(maps.Keys(req.Set)) {
		if err := s.checkProperty(k, req.Set[k]); err != nil {
			return nil, err
		}
	}
	for _, k := range req.Remove {
		if err := s.checkProperty(k, ""); err != nil {
			return nil, err
		}
		if _, ok := req.Set[k]; ok {
			return nil, wire.Errorf(wire.CodeBadRequest, "property %q is both set and removed", k)
		}
	}
	// The caller's own session is changed from the instance's copy (heldCaller); acting
	// on others needs the caller's current roles, read fresh.
	own := req.Filter == "" && (req.ID == "" || req.ID == c.SessionID)
	var me *sessions.Record
	var err error
	if own {
		me, err = s.heldCaller(ctx, c)
	} else {
		me, err = s.caller(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	change := func(rec *sessions.Record) (bool, error) {
		set := req.Set
		if own {
			// On the record being changed: modify repeats it on every read.
			for _, k := range slices.Concat(slices.Collect(maps.Keys(req.Set)), req.Remove) {
				if !s.pol.Allowed(rec.Roles, policy.ModifyOwnProperties, k) {
					return false, wire.Errorf(wire.CodeForbidden, "changing property %q of the own session needs %s on it", k, policy.ModifyOwnProperties)
				}
			}
			// What the session could not have proposed at open it cannot set
			// later, nor remove what the rules keep from clients.
			vetted, refused := s.pol.VetChange(req.Set, req.Remove)
			if len(refused) > 0 {
				return false, wire.Errorf(wire.CodeForbidden, "the policy's property rules refuse this change by the session itself: %s", strings.Join(refused, "; "))
			}
			set = vetted
		}
		before := len(rec.User)
		keys := applyChanges(rec, set, req.Remove)
		// Refused only when it adds properties: a session over the limit (one lowered
		// since its properties were set) may still remove and change them.
		if n := len(rec.User); n > s.cfg.Limits.Properties && n > before {
			return false, wire.Errorf(wire.CodeLimitExceeded, "%d user properties; the limit of properties per session is %d", n, s.cfg.Limits.Properties)
		}
		return len(keys) > 0, nil
	}
	// Seed 002: another session's properties are changed by clients with
	// VIEW_SESSION and MODIFY_SESSION. With MODIFY_SESSION alone, the answer showed
	// the whole session, and a filter selected by properties the caller may not read.
	if !own && !(s.pol.Allowed(me.Roles, policy.ViewSession, "") && s.pol.Allowed(me.Roles, policy.ModifySession, "")) {
		return nil, wire.Errorf(wire.CodeForbidden, "updating other sessions needs %s and %s", policy.ViewSession, policy.ModifySession)
	}
	if req.Filter != "" {
		recs, match, err := s.matching(ctx, req.Filter)
		if err != nil {
			return nil, err
		}
		// The view's copy matched; the record written must match too.
		matchingChange := func(rec *sessions.Record) (bool, error) {
			if !match(rec) {
				return false, nil
			}
			return change(rec)
		}
		// All or none as far as the limits go: a session the change would take over a
		// limit refuses the request before anything is written. A session that a
		// concurrent change takes over a limit meanwhile is left out of the count.
		for i, r := range recs {
			if i%eachRecordChunk == 0 {
				if err := interrupted(ctx); err != nil {
					return nil, prefixError(err, "", "; no session was changed")
				}
			}
			if _, _, err := s.prepare(ctx, r, nil, wire.EventUpdated, change); err != nil {
				return nil, prefixError(err, "session "+r.ID+": ", "; no session was changed")
			}
		}
		// One session after another, each a compare-and-set seen through once sent
		// (store.write); the request's deadline stops the loop between two, and the
		// error says how far it got.
		n := 0
		for _, r := range recs {
			if ctx.Err() != nil {
				return nil, stoppedAt(ctx, nil, "updating", n, len(recs))
			}
			_, changed, err := s.updateOne(ctx, r.ID, nil, nil, matchingChange)
			if errors.Is(err, wire.ErrLimitExceeded) {
				continue
			}
			if err != nil && !errors.Is(err, wire.ErrSessionClosed) && !errors.Is(err, wire.ErrSessionNotFound) {
				return nil, stoppedAt(ctx, err, "updating", n, len(recs))
			}
			if changed {
				n++
			}
		}
		return &wire.SessionUpdateResponse{Updated: n}, nil
	}
	target, _, err := s.target(ctx, me, req.ID, policy.ModifySession)
	if err != nil {
		return nil, err
	}
	var check func(*sessions.Record) error
	if own {
		check = ownedBy(c)
	}
	rec, changed, err := s.updateOne(ctx, target.ID, target, check, change)
	if err != nil {
		return nil, err
	}
	resp := &wire.SessionUpdateResponse{Session: rec.Public()}
	if changed {
		resp.Updated = 1
	}
	return resp, nil
}

// prefixError returns err with its message between prefix and suffix, keeping its code.
func prefixError(err error, prefix, suffix string) error {
	var we *wire.Error
	if !errors.As(err, &we) {
		return err
	}
	return &wire.Error{Code: we.Code, Message: prefix + we.Message + suffix}
}

func (s *Service) updateOne(ctx context.Context, id string, first *sessions.Record, check func(*sessions.Record) error, change func(*sessions.Record) (bool, error)) (*sessions.Record, bool, error) {
	return s.modify(ctx, id, first, check, wire.EventUpdated, change)
}

// jsonSize is the size of v in a stored record: the properties as JSON, each
// byte of a string taking up to six.
func jsonSize(v map[string]string) int {
	data, _ := json.Marshal(v) // a map of strings always marshals
	return len(data)
}

func changedKeys(before, after map[string]string) []string {
	var keys []string
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			keys = append(keys, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// keepalive records activity of the caller's session. It writes nothing: activity is
// tracked in memory by every registry instance and persisted lazily.
//
// A keepalive authenticates against the record this instance holds (the watch's),
// not a fresh read: it only records activity, which a record a few milliseconds old
// cannot misuse, and it must keep working while the bucket elects a leader — a
// keepalive refused then would let a live session expire. Sessions the instance does
// not hold yet, and tokens that do not match (rotated a moment ago), are read fresh.
// So is a session the copy has RECOVERING: the SDK acts on that answer — it reports
// the session's connection-scoped locks lost and resumes it — and a copy behind a
// resume (a watch stalled by a node's death holds one for seconds) had clients drop
// locks they held at every keepalive until it caught up.
func (s *Service) keepalive(ctx context.Context, c *endpoint.Call, _ *wire.SessionKeepaliveRequest) (*wire.SessionKeepaliveResponse, error) {
	me, err := s.heldCaller(ctx, c)
	if err == nil && me.State != wire.StateActive {
		me, err = s.caller(ctx, c)
	}
	if err != nil {
		return nil, err
	}
	return &wire.SessionKeepaliveResponse{State: me.State, TimeoutMS: me.TimeoutMS, ReconnectWindowMS: s.windowMS()}, nil
}

// resume binds the caller's session to the connection the request came from and
// makes it ACTIVE again.
func (s *Service) resume(ctx context.Context, c *endpoint.Call, _ *wire.SessionResumeRequest) (*wire.SessionResumeResponse, error) {
	me, err := s.caller(ctx, c)
	if err != nil {
		return nil, err
	}
	conn, key, acc := c.Info().ConnectionKey(), deliverKey(c.Info()), connAccount(c.Info())
	var formerKey string // the client's whose connection the session leaves
	rec, changed, err := s.modify(ctx, me.ID, me, ownedBy(c), wire.EventReconnected, func(r *sessions.Record) (bool, error) {
		if r.State == wire.StateActive && r.Connection == conn && r.DeliverKey == key {
			return false, nil
		}
		formerKey = ""
		if r.DeliverKey != key {
			formerKey = r.DeliverKey
		}
		r.State = wire.StateActive
		r.Connection, r.DeliverKey, r.Account = conn, key, acc
		r.RecoveringSince = nil
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	// The session is bound to conn now: what that asks of the registry is done
	// whatever the request's deadline.
	dctx, done := endpoint.WithoutDeadline(ctx)
	defer done()
	s.track.bound(dctx, conn)
	if changed && formerKey != "" {
		s.tellMoved(ctx, rec, formerKey)
	}
	return &wire.SessionResumeResponse{Session: rec.Public(), ReconnectWindowMS: s.windowMS()}, nil
}

// errUserChanged ends a change of principal's write when the session's user
// properties changed since the auth service vetted them.
var errUserChanged = errors.New("registry: user properties changed during the change of principal")

// changePrincipalAttempts bounds how often a change of principal authenticates again
// because the session's properties changed meanwhile.
const changePrincipalAttempts = 5

// changePrincipal re-authenticates the caller's session: new principal, roles and
// user properties as the auth service decides, and a new token. The auth service
// vets the session's current properties; if they change before the write (an update
// acknowledged meanwhile), it vets them again rather than write back the old ones.
func (s *Service) changePrincipal(ctx context.Context, c *endpoint.Call, req *wire.SessionChangePrincipalRequest) (*wire.SessionChangePrincipalResponse, error) {
	me, err := s.caller(ctx, c)
	if err != nil {
		return nil, err
	}
	for range changePrincipalAttempts {
		resp, err := s.changePrincipalOnce(ctx, c, req, me)
		if !errors.Is(err, errUserChanged) {
			return resp, err
		}
		if me, err = s.caller(ctx, c); err != nil {
			return nil, err
		}
	}
	return nil, wire.Errorf(wire.CodeConflict, "the session's properties kept changing during the change of principal; retry")
}

func (s *Service) changePrincipalOnce(ctx context.Context, c *endpoint.Call, req *wire.SessionChangePrincipalRequest, me *sessions.Record) (*wire.SessionChangePrincipalResponse, error) {
	proposed := me.User
	auth, user, authFixed, err := s.authenticate(ctx, req.Credentials, proposed, attemptInfo(c.Info(), me))
	if err != nil {
		return nil, err
	}
	if me.Permanent && !s.pol.Allowed(auth.Roles, policy.PermanentSession, "") {
		return nil, wire.Errorf(wire.CodeForbidden, "the new principal may not hold a permanent session (%s)", policy.PermanentSession)
	}
	if auth.Principal != me.Principal {
		release, err := s.track.reserve(auth.Principal, me.ID, s.cfg.Limits.SessionsPerPrincipal)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	// A client that gave up during the authentication never learns the new token:
	// the write would rotate the one it still holds and lock it out of its own
	// session. From the write on the change is seen through (store.write), as an
	// open's create is.
	if err := endpoint.Interrupted(ctx, "the registry is stopping"); err != nil {
		return nil, err
	}
	token := newToken()
	rec, _, err := s.modify(ctx, me.ID, me, ownedBy(c), wire.EventPrincipalChanged, func(r *sessions.Record) (bool, error) {
		if !maps.Equal(r.User, proposed) {
			return false, errUserChanged
		}
		r.Principal = auth.Principal
		r.Roles = append([]string{}, auth.Roles...)
		r.User = user
		r.Fixed[sessions.PropPrincipal] = auth.Principal
		r.Fixed[sessions.PropRoles] = filter.RolesToString(auth.Roles)
		maps.Copy(r.Fixed, authFixed)
		r.TokenHash = sessions.HashToken(token)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return &wire.SessionChangePrincipalResponse{Session: rec.Public(), Token: token}, nil
}

// attemptInfo is the request info a change of principal of rec is authenticated with:
// the requesting connection's, except for a gateway's session, whose user is known by
// the address the gateway gave at open ($ClientIP), as the open was. With the
// gateway connection's address, one user's wrong passwords throttled the changes of
// principal of every user of the gateway.
func attemptInfo(info *wire.RequestInfo, rec *sessions.Record) *wire.RequestInfo {
	ip := rec.Fixed[sessions.PropClientIP]
	if rec.Fixed[sessions.PropGatewayType] == "" || ip == "" {
		return info
	}
	return withHost(info, ip)
}

// withHost returns a copy of info (which may be nil) whose client address is host:
// a gateway's user, known by the address the gateway gives.
func withHost(info *wire.RequestInfo, host string) *wire.RequestInfo {
	ui := wire.RequestInfo{}
	if info != nil {
		ui = *info
	}
	ui.Host = host
	return &ui
}

// close closes the caller's session (by_client) or, with MODIFY_SESSION, another by
// id or every session matching a filter (by_server).
func (s *Service) close(ctx context.Context, c *endpoint.Call, req *wire.SessionCloseRequest) (*wire.SessionCloseResponse, error) {
	if req.ID != "" && req.Filter != "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "name the session by id or by filter, not both")
	}
	if req.Filter == "" && (req.ID == "" || req.ID == c.SessionID) {
		me, err := s.heldCaller(ctx, c)
		if err != nil {
			return nil, err
		}
		if err := s.closeSession(ctx, me.ID, me, ownedBy(c), wire.ClosedByClient); err != nil {
			return nil, err
		}
		return &wire.SessionCloseResponse{Closed: 1}, nil
	}
	me, err := s.caller(ctx, c)
	if err != nil {
		return nil, err
	}
	if req.Filter != "" {
		if !s.pol.Allowed(me.Roles, policy.ModifySession, "") {
			return nil, wire.Errorf(wire.CodeForbidden, "closing other sessions needs %s", policy.ModifySession)
		}
		recs, match, err := s.matching(ctx, req.Filter)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, r := range recs {
			if ctx.Err() != nil {
				return nil, stoppedAt(ctx, nil, "closing", n, len(recs))
			}
			reason := wire.ClosedByServer
			if r.ID == me.ID {
				reason = wire.ClosedByClient
			}
			// The view's copy matched; the record closed must match too.
			closed, err := s.closeIf(ctx, r.ID, nil, nil, func(cur *sessions.Record) (wire.CloseReason, bool) { return reason, match(cur) })
			switch {
			case err == nil:
				if closed {
					n++
				}
			case errors.Is(err, wire.ErrSessionClosed), errors.Is(err, wire.ErrSessionNotFound):
			default:
				// Those closed before stay closed: say how many, as update does.
				return nil, stoppedAt(ctx, err, "closing", n, len(recs))
			}
		}
		return &wire.SessionCloseResponse{Closed: n}, nil
	}
	target, _, err := s.target(ctx, me, req.ID, policy.ModifySession)
	if err != nil {
		return nil, err
	}
	if err := s.closeSession(ctx, target.ID, target, nil, wire.ClosedByServer); err != nil {
		return nil, err
	}
	return &wire.SessionCloseResponse{Closed: 1}, nil
}

// closeSession moves a session to CLOSED with a compare-and-set that also writes the
// one CLOSED event (message id <id>-closed) into the record's outbox, and publishes
// it. Only the write that made the transition stages it, and every publish of it
// carries the same message id, so it is stored once. A session already closed is
// session_closed.
func (s *Service) closeSession(ctx context.Context, id string, first *sessions.Record, check func(*sessions.Record) error, reason wire.CloseReason) error {
	_, err := s.closeIf(ctx, id, first, check, func(*sessions.Record) (wire.CloseReason, bool) { return reason, true })
	return err
}

// closeIf is closeSession with the decision taken again on the current record before
// each attempt: decide returns the reason, or false to write nothing (the expiry uses
// it to honour activity that arrived meanwhile, a close by filter to leave a session
// that no longer matches). closed reports whether this call closed the session.
func (s *Service) closeIf(ctx context.Context, id string, first *sessions.Record, check func(*sessions.Record) error, decide func(*sessions.Record) (wire.CloseReason, bool)) (closed bool, err error) {
	rec, changed, err := s.modify(ctx, id, first, check, wire.EventClosed, func(r *sessions.Record) (bool, error) {
		reason, ok := decide(r)
		if !ok {
			return false, nil
		}
		now := s.cfg.Now()
		r.State = wire.StateClosed
		r.CloseReason = reason
		r.ClosedAt = &now
		r.RecoveringSince = nil
		return true, nil
	})
	if err == nil && changed {
		s.metrics.sessionClosed(ctx, rec)
		s.tellClosed(ctx, rec)
	}
	return err == nil && changed, err
}

// tombstoneExpired writes the CLOSED tombstone of a session whose record the KV TTL
// removed (no registry closed it in time), from the last record seen, and publishes
// its CLOSED event. Several instances may race; Create lets one win. It returns the
// error of a write worth trying again: nil once the tombstone is written, by this
// instance or another.
func (s *Service) tombstoneExpired(ctx context.Context, last *sessions.Record) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.gonePatience)
	defer cancel()
	rec := last.Clone()
	now := s.cfg.Now()
	rec.State = wire.StateClosed
	rec.CloseReason = wire.ClosedExpired
	rec.ClosedAt = &now
	rec.UpdatedAt = now
	rec.RecoveringSince = nil
	if err := s.carryOutbox(ctx, last, rec); err != nil {
		return err
	}
	stage(ctx, rec, wire.EventClosed, nil)
	data, err := sessions.Encode(rec)
	if err != nil {
		s.log.Warn("writing the tombstone of an expired session", "session_id", rec.ID, "err", err)
		return nil // the same record would not encode again
	}
	rev, err := s.st.create(ctx, rec.ID, data, ttlFor(&s.cfg, rec))
	if errors.Is(err, errConflict) {
		return nil
	}
	if err != nil {
		return err
	}
	rec.Revision = rev
	s.track.written(rec)
	s.metrics.sessionClosed(ctx, rec)
	s.publishStaged(rec)
	return nil
}

// deliverKey returns the connection key the auth callout verified for the requesting
// connection (the user nkey it named the connection after), or "" when it has none.
func deliverKey(ri *wire.RequestInfo) string {
	if ri == nil || !nkeys.IsValidPublicUserKey(ri.User) {
		return ""
	}
	return ri.User
}

// connAccount returns the NATS account of the requesting connection, or "" when the
// request carried no request info.
func connAccount(ri *wire.RequestInfo) string {
	if ri == nil || ri.ID == 0 { // no connection key either (ConnectionKey)
		return ""
	}
	return ri.Account
}
