package natstest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Raw is a client connection that speaks the NATS protocol by hand, for tests that
// send what no client library would: a header block of any bytes, say. It proves a
// fresh user nkey (the connection key of the auth callout) and receives replies on
// its own inbox under _R.<key>, so that a callout admits it like an SDK client.
type Raw struct {
	// Key is the connection key the server verified.
	Key string

	t     testing.TB
	conn  net.Conn
	r     *bufio.Reader
	inbox string
	n     int
}

// DialRaw connects to url (nats://host:port) as a client; connect adds members to
// the CONNECT (user and pass, say). The connection closes when the test ends.
func DialRaw(t testing.TB, rawURL string, connect map[string]any) *Raw {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("natstest: raw: %v", err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("natstest: raw: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	r := &Raw{Key: pub, t: t, conn: c, r: bufio.NewReader(c), inbox: "_R." + pub + ".raw"}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := r.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("natstest: raw: no INFO: %q %v", line, err)
	}
	var info struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "INFO ")), &info); err != nil {
		t.Fatalf("natstest: raw: INFO: %v", err)
	}
	opts := map[string]any{"verbose": false, "pedantic": false, "headers": true, "protocol": 1,
		"no_responders": true, "lang": "raw", "version": "0"}
	if info.Nonce != "" {
		sig, _ := kp.Sign([]byte(info.Nonce))
		opts["nkey"], opts["sig"] = pub, base64.RawURLEncoding.EncodeToString(sig)
	}
	for k, v := range connect {
		opts[k] = v
	}
	b, _ := json.Marshal(opts)
	r.write("CONNECT %s\r\nSUB %s.> 1\r\nPING\r\n", b, r.inbox)
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			t.Fatalf("natstest: raw: connect: %v", err)
		}
		switch {
		case strings.HasPrefix(line, "PONG"):
			_ = c.SetDeadline(time.Time{})
			return r
		case strings.HasPrefix(line, "-ERR"):
			t.Fatalf("natstest: raw: connect refused: %s", strings.TrimSpace(line))
		}
	}
}

func (r *Raw) write(format string, args ...any) {
	r.t.Helper()
	if _, err := fmt.Fprintf(r.conn, format, args...); err != nil {
		r.t.Fatalf("natstest: raw: write: %v", err)
	}
}

// Request publishes body to subject with header as the header block, byte for byte
// (it must start with "NATS/1.0"; empty: a message without headers), and returns
// the reply. A -ERR from the server (a permissions violation) is an error.
func (r *Raw) Request(subject, header string, body []byte, timeout time.Duration) (*nats.Msg, error) {
	r.t.Helper()
	r.n++
	reply := r.inbox + "." + strconv.Itoa(r.n)
	if header == "" {
		r.write("PUB %s %s %d\r\n%s\r\n", subject, reply, len(body), body)
	} else {
		r.write("HPUB %s %s %d %d\r\n%s%s\r\n", subject, reply, len(header), len(header)+len(body), header, body)
	}
	_ = r.conn.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = r.conn.SetReadDeadline(time.Time{}) }()
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("natstest: raw: waiting for the reply: %w", err)
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "PING":
			r.write("PONG\r\n")
		case "-ERR":
			return nil, fmt.Errorf("natstest: raw: %s", strings.TrimSpace(line))
		case "MSG", "HMSG":
			m, err := r.readMsg(f)
			if err != nil {
				return nil, err
			}
			if m.Subject == reply {
				return m, nil
			}
		}
	}
}

// readMsg reads the payload of a MSG or HMSG whose protocol line split into f.
func (r *Raw) readMsg(f []string) (*nats.Msg, error) {
	hdrLen, total := 0, 0
	var err error
	switch {
	case f[0] == "MSG" && len(f) >= 4:
		total, err = strconv.Atoi(f[len(f)-1])
	case f[0] == "HMSG" && len(f) >= 5:
		if hdrLen, err = strconv.Atoi(f[len(f)-2]); err == nil {
			total, err = strconv.Atoi(f[len(f)-1])
		}
	default:
		return nil, fmt.Errorf("natstest: raw: bad %s line %q", f[0], f)
	}
	if err != nil {
		return nil, fmt.Errorf("natstest: raw: %w", err)
	}
	buf := make([]byte, total+2)
	if _, err := io.ReadFull(r.r, buf); err != nil {
		return nil, fmt.Errorf("natstest: raw: %w", err)
	}
	m := &nats.Msg{Subject: f[1], Data: buf[hdrLen:total]}
	if hdrLen > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(buf[:hdrLen]); err != nil {
			return nil, fmt.Errorf("natstest: raw: %w", err)
		}
	}
	return m, nil
}
