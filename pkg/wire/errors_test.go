package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestEncodeErrorBoundsTheHeaderMessage: the header repeats at most 1 KiB of the
// message, cut on a character boundary; the body carries it whole.
func TestEncodeErrorBoundsTheHeaderMessage(t *testing.T) {
	long := strings.Repeat("é", 600_000) // 1.2 MB
	status, msg, body := EncodeError(Errorf(CodeNotFound, "%s", long))
	if status != "404" || len(msg) > maxHeaderMessage+len("…") || !utf8.ValidString(msg) || !strings.HasSuffix(msg, "…") {
		t.Fatalf("header message of %d bytes (valid UTF-8: %v)", len(msg), utf8.ValidString(msg))
	}
	var eb ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Message != long {
		t.Fatalf("the body does not carry the whole message: %v", err)
	}
	if _, short, _ := EncodeError(Errorf(CodeNotFound, "no such thing")); short != "no such thing" {
		t.Fatalf("a short message: got %q", short)
	}
}

func TestCodeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Code
	}{
		{Errorf(CodeSessionClosed, "gone"), CodeSessionClosed},
		{fmt.Errorf("wrapped: %w", Errorf(CodeConflict, "x")), CodeConflict},
		{&Error{Code: "no_such_code"}, CodeInternal},
		{errors.New("plain"), CodeInternal},
	} {
		if got := CodeOf(tc.err); got != tc.want {
			t.Errorf("CodeOf(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
