package lock

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/schematest"
	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestNamesAcceptedAsTheSchemaAccepts: a lock name the schema accepts is accepted by
// the service, and one it refuses is invalid_name. The schema's maxLength counts
// characters, and the white space its pattern refuses must be the white space the
// service refuses.
func TestNamesAcceptedAsTheSchemaAccepts(t *testing.T) {
	e := newEnv(t)
	e.startLock(t, Config{})
	a := e.open(t, "admin", 0)
	for _, tc := range []struct {
		name string
		lock string
	}{
		{"ascii at the limit", strings.Repeat("a", 256)},
		{"ascii past the limit", strings.Repeat("a", 257)},
		{"two-byte characters, 129", strings.Repeat("é", 129)},
		{"two-byte characters at the limit", strings.Repeat("é", 256)},
		{"two-byte characters past the limit", strings.Repeat("é", 257)},
		{"four-byte characters at the limit", strings.Repeat("😀", 256)},
		{"no-break space", "a\u00a0b"},
		{"ideographic space", "a\u3000b"},
		{"line separator", "a\u2028b"},
		{"narrow no-break space", "a\u202fb"},
		{"next line (control)", "a\u0085b"},
		{"tab", "a\tb"},
		{"zero width no-break space (not white space)", "a\ufeffb"},
		{"segments of letters", "update-topic/é/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := json.Marshal(&wire.LockAcquireRequest{Name: tc.lock})
			if err != nil {
				t.Fatal(err)
			}
			schemaErr := schematest.Check("lock.acquire.request", body)
			_, err = a.rawCall(ctx10(t), wire.SubjectLockAcquire, body)
			var we *wire.Error
			refused := errors.As(err, &we) && we.Code == wire.CodeInvalidName
			if !refused && err != nil {
				t.Fatalf("acquire: got %v, want the lock or invalid_name", err)
			}
			switch {
			case schemaErr == nil && refused:
				t.Fatalf("the schema accepts the name and the service refuses it: %v", err)
			case schemaErr != nil && !refused:
				t.Fatalf("the schema refuses the name (%v) and the service accepts it", schemaErr)
			}
		})
	}
}
