package endpoint

import (
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

func BenchmarkDecodeSend(b *testing.B) {
	body := []byte(`{"session_id":"5QmZc1h8RqP0aLxV2yWfKd","path":"chat/room1","content_type":"text/plain","headers":{"x-a":"1"},"payload":"aGVsbG8gd29ybGQ="}`)
	b.ReportAllocs()
	for b.Loop() {
		var m wire.MsgSendRequest
		if err := Decode(body, &m); err != nil {
			b.Fatal(err)
		}
	}
}
