// Package natsprobe tells what kind of port a NATS URL that failed to connect
// names, for an error that says what to fix.
package natsprobe

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// A URL copied from the wrong line of a server's configuration is a likely reason
// for a connection that fails. nats.go reports what the port did, not what it is:
//
//   - A cluster route port (6222 by default) greets with a route's INFO and refuses
//     the client's CONNECT: "Authorization Violation" where routes authenticate, as
//     Roster's and deploy/'s do, which read as refused credentials. (nats.go first
//     follows the client URLs that INFO advertises, so this is seen only where a
//     cluster advertises none, or none the client reaches: then the error is of
//     those URLs, such as "no servers available for connection".)
//   - The HTTP monitoring port (8222 by default) sends nothing until it has read an
//     HTTP request, and nats.go, waiting for INFO, times out ("read tcp …: i/o
//     timeout").
//
// So after a failed connect the servers given are asked again, as the client port
// would be, and what each sends says which port it is (WrongPort).

// probeTimeout bounds the probe of the servers after a failed Connect: it adds at
// most this to the failure, in practice the time of a round trip (a server that
// answers at once) or of a refused dial.
const probeTimeout = 2 * time.Second

// probeInfoWait is how long a probe waits for a server to speak first before it
// sends a PING: a NATS port sends INFO at once, an HTTP port waits for a request.
// It only decides when the PING goes: the probe judges by the first line it
// reads, so a NATS server slower than this is still read as NATS.
const probeInfoWait = 250 * time.Millisecond

// maxProbeLine bounds the line a probe reads (an INFO lists the cluster's URLs).
const maxProbeLine = 64 << 10

// clientPortHint ends the description of a wrong port.
const clientPortHint = "clients connect to the client port, 4222 by default"

// WrongPort asks the servers of urls (nats.Connect's comma-separated list) what they
// are, and describes the first that is a route port or an HTTP port, or returns ""
// when none is (or none answered within probeTimeout). opts are the connection's,
// for its dialer. Call it after a connect failed: it adds at most probeTimeout.
func WrongPort(urls string, opts ...nats.Option) string {
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if opt != nil && opt(&o) != nil {
			return ""
		}
	}
	if o.InProcessServer != nil {
		return "" // no port at all
	}
	var servers []string
	for s := range strings.SplitSeq(urls, ",") {
		if s = strings.TrimSpace(s); s != "" {
			servers = append(servers, s)
		}
	}
	deadline := time.Now().Add(probeTimeout)
	found := make([]chan string, len(servers))
	for i, s := range servers {
		found[i] = make(chan string, 1)
		go func() { found[i] <- probeServer(s, o, deadline) }()
	}
	timer := time.NewTimer(time.Until(deadline) + probeInfoWait)
	defer timer.Stop()
	// In the order given; a probe not back in time (a custom dialer that does not
	// return) is left to finish alone.
	for _, ch := range found {
		select {
		case hint := <-ch:
			if hint != "" {
				return hint
			}
		case <-timer.C:
			return ""
		}
	}
	return ""
}

// probeServer connects to one server of the list as the client port would be
// connected to, and describes it when it is a route port or an HTTP port.
func probeServer(server string, o nats.Options, deadline time.Time) string {
	raw := server
	if !strings.Contains(raw, "://") {
		raw = "nats://" + raw // as nats.go reads a bare host:port
	}
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	switch strings.ToLower(u.Scheme) {
	case "nats", "tls":
	default:
		return "" // WebSocket: nats.go's own HTTP handshake tells more
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "4222")
	}
	conn, err := probeDial(o, addr, deadline)
	if err != nil {
		return ""
	}
	defer conn.Close()
	line := probeFirstLine(conn, deadline)
	name := RedactURLs(server)
	switch {
	case isRouteInfo(line):
		return name + " is a NATS cluster route port, not a client port (" + clientPortHint + ")"
	case strings.HasPrefix(line, "HTTP/"):
		return name + " answers HTTP, as a NATS monitoring port does, not the NATS protocol (" + clientPortHint + ")"
	}
	return ""
}

// probeDial dials addr with the connection's dialer, by deadline.
func probeDial(o nats.Options, addr string, deadline time.Time) (net.Conn, error) {
	if o.CustomDialer != nil {
		return o.CustomDialer.Dial("tcp", addr)
	}
	d := net.Dialer{}
	if o.Dialer != nil {
		d = *o.Dialer
	}
	d.Timeout, d.Deadline = 0, deadline
	return d.Dial("tcp", addr)
}

// probeFirstLine returns the first line conn sends, sending it a PING when it has
// sent nothing within probeInfoWait: an HTTP server answers that with an error
// status, and a NATS port has normally sent its INFO before (nothing is written to
// one that has, where a line before CONNECT is an authorization violation).
func probeFirstLine(conn net.Conn, deadline time.Time) string {
	br := bufio.NewReader(io.LimitReader(conn, maxProbeLine))
	wait := time.Now().Add(probeInfoWait)
	if wait.After(deadline) {
		wait = deadline
	}
	_ = conn.SetReadDeadline(wait)
	if _, err := br.Peek(1); err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return ""
		}
		_ = conn.SetDeadline(deadline)
		if _, err := conn.Write([]byte("PING\r\n")); err != nil {
			return ""
		}
	}
	_ = conn.SetReadDeadline(deadline)
	line, _ := br.ReadString('\n')
	return line
}

// isRouteInfo reports whether line is the INFO of a route port: nats-server sets
// "lnoc" (leafnode origin cluster, a route's capability) in the INFO of its route
// listener only, never in a client's, leafnode's or gateway's.
func isRouteInfo(line string) bool {
	op, args, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok || !strings.EqualFold(op, "INFO") {
		return false
	}
	var info struct {
		LNOC bool `json:"lnoc"`
	}
	return json.Unmarshal([]byte(args), &info) == nil && info.LNOC
}

// RedactURLs hides the credentials of NATS URLs (a comma-separated list) that
// messages repeat: a password, or a user name without one, which NATS reads as a
// token. A URL that does not parse, or parses with no user but an '@' (in what it
// takes for a path: a password or token holding a '/'), has all that precedes its
// last '@' hidden: it was repeated whole.
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		t := strings.TrimSpace(p)
		u, err := url.Parse(t)
		if err != nil || u.User == nil {
			if at := strings.LastIndex(t, "@"); at >= 0 {
				scheme := ""
				if end := strings.Index(t[:at], "://"); end >= 0 {
					scheme = t[:end+3]
				}
				parts[i] = scheme + "xxxxx" + t[at:]
			}
			continue
		}
		if _, ok := u.User.Password(); !ok {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}

// CheckURLs returns an error when a URL of urls (nats.Connect's comma-separated
// list) does not parse, or parses with an '@' outside its user name and password:
// a password or token holding a '/' (base64 has them), '?' or '#' ends the host
// there, and what follows it is a path nats.go ignores. Call it before connecting.
// nats.go returned url.Parse's error as it is, which quotes the URL whole, password
// and all, and may quote a piece of it in its cause (an escape, a "port"); a URL
// that parsed that way was dialled at a host name made of the piece before the
// '/', which the dial's error named. url.Parse's error was also a net.Error (it has
// Timeout and Temporary), so that a caller waiting for NATS to come up retried it.
// The error returned repeats no URL that holds an '@', and is no net.Error: a URL
// that does not parse never will.
func CheckURLs(urls string) error {
	for _, s := range strings.Split(urls, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		raw := s
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw // as nats.go reads a bare host:port
		}
		u, err := url.Parse(raw)
		credentials := strings.Contains(s, "@")
		switch {
		case credentials && (err != nil || u.User == nil || strings.Contains(u.Path+u.RawQuery+u.Fragment, "@")):
			return errors.New("a server URL does not parse as a NATS URL (not repeated here: it holds credentials); " +
				"percent-encode the characters of its user name, password or token other than letters, digits and -._~")
		case err != nil:
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err
			}
			return fmt.Errorf("server URL %q does not parse: %w", s, err)
		}
	}
	return nil
}
