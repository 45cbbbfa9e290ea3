package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
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

// TestRequestErrorsAreOneLine: a request that timed out or lost its connection says
// so on one line, matching both its wire code and NATS's cause; joined, the cause
// went on a line of its own, which the CLI printed without its "roster:" prefix.
func TestRequestErrorsAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		cause error
		code  *Error
	}{
		{context.DeadlineExceeded, ErrTimeout},
		{nats.ErrTimeout, ErrTimeout},
		{nats.ErrConnectionClosed, ErrUnavailable},
	} {
		err := requestError("roster.v1.session.get", tc.cause)
		if strings.Contains(err.Error(), "\n") || !errors.Is(err, tc.code) || !errors.Is(err, tc.cause) {
			t.Errorf("%v: got %q; want one line matching %s and the cause", tc.cause, err, tc.code.Code)
		}
	}
}
