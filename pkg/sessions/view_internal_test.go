package sessions

import (
	"testing"
	"time"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// A record read before its key was removed (a fetch racing the watch) and applied
// after the removal does not bring the session back; a later record (a tombstone
// written after a TTL removal) does.
func TestRemovalIsNotUndoneByAnOlderRead(t *testing.T) {
	for _, slim := range []bool{false, true} {
		v := &View{slim: slim, records: map[string]*Record{}, held: map[string]*held{}, subs: map[int]func(Change){}, removed: map[string]removal{}}
		live := &Record{ID: "s1", State: wire.StateActive, Revision: 5}
		v.applyRecord("s1", live, 5)
		v.applyRecord("s1", nil, 7)  // the TTL removed the key
		v.applyRecord("s1", live, 5) // a fetch that read revision 5 before the removal
		if _, ok := v.Get("s1"); ok {
			t.Fatalf("slim=%v: the removed session is back", slim)
		}
		tomb := &Record{ID: "s1", State: wire.StateClosed, CloseReason: wire.ClosedExpired, Revision: 8}
		v.applyRecord("s1", tomb, 8)
		if r, ok := v.Get("s1"); !ok || !r.Closed() {
			t.Fatalf("slim=%v: got %+v, %v; want the tombstone", slim, r, ok)
		}
		v.applyRecord("s1", nil, 9)
		v.forgetRemovals(time.Now().Add(2 * removedFor))
		if len(v.removed) != 0 {
			t.Fatalf("slim=%v: %d removals remembered past removedFor", slim, len(v.removed))
		}
	}
}
