package natstest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Partition forwards TCP connections to a NATS server, and can cut them off the way
// a network partition does: Freeze drops every byte either way while both TCP
// connections stay open, so that neither side hears anything, nor learns that
// anything is wrong, until its own pings go unanswered (minutes, by default).
// Sever then closes the server's side alone: the server sees the connection close
// (its DISCONNECT advisory) while the client still hears nothing. Mute drops only
// what the server sends: the client's requests arrive, their answers are lost. Heal
// closes what is left and forwards again, so that the client reconnects through it;
// Close refuses new connections too, so that to a client the server is gone.
type Partition struct {
	l      net.Listener
	target string
	frozen atomic.Bool
	muted  atomic.Bool
	cut    atomic.Bool
	mu     sync.Mutex
	client []net.Conn // the client's side of each connection
	server []net.Conn // the server's side
	wg     sync.WaitGroup
}

// StartPartition listens on a free local port and forwards to target (a nats://
// URL or host:port) until the test ends.
func StartPartition(t testing.TB, target string) *Partition {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Partition{l: l, target: strings.TrimPrefix(target, "nats://")}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// URL is the address clients connect to.
func (p *Partition) URL() string { return "nats://" + p.l.Addr().String() }

func (p *Partition) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.cut.Load() {
			// The server is out of reach until Heal (read under p.mu, where Cut
			// closes the connections it knows).
			p.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		p.client = append(p.client, in)
		p.server = append(p.server, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in, &p.frozen)
		go p.pipe(in, out, &p.muted)
	}
}

// pipe copies src to dst, dropping what it reads while frozen (or while drop is
// set: muted, for what the server sends). When src ends it closes dst — unless
// frozen: a partitioned peer hears nothing, not a close.
func (p *Partition) pipe(dst, src net.Conn, drop *atomic.Bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() && !drop.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !p.frozen.Load() {
				dst.Close()
			}
			return
		}
	}
}

// Freeze drops everything either way from now on, with every connection left open.
func (p *Partition) Freeze() { p.frozen.Store(true) }

// Mute drops what the server sends from now on: requests still reach it, and their
// answers are lost on the way back.
func (p *Partition) Mute() { p.muted.Store(true) }

// Sever closes the server's side of every connection: the server counts them
// closed, while their clients, frozen, hear nothing.
func (p *Partition) Sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.server {
		c.Close()
	}
	p.server = nil
}

// Heal closes every connection, both sides, and forwards new ones again: the
// clients see their connection drop and reconnect.
func (p *Partition) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeAllLocked()
	p.frozen.Store(false)
	p.muted.Store(false)
	p.cut.Store(false)
}

// Cut closes every connection, both sides, and closes new ones at once until Heal:
// the clients see their connection drop and cannot reconnect through p meanwhile.
func (p *Partition) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut.Store(true)
	p.closeAllLocked()
}

func (p *Partition) closeAllLocked() {
	for _, c := range append(p.client, p.server...) {
		c.Close()
	}
	p.client, p.server = nil, nil
}

// Close stops listening, closes every connection and waits for the copies to end.
func (p *Partition) Close() {
	p.l.Close()
	p.Heal()
	p.wg.Wait()
}
