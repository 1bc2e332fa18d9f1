// Package health tells, within a few hundred milliseconds, whether each peer gateway is
// alive: a Prober sends a small UDP probe to every target every Interval and a Responder on
// each gateway echoes it. A target is down after FailAfter intervals without an answer and
// up again after RiseAfter answers in a row; every change is reported at once.
//
// Probes go to the gateway's node address (the underlay the tunnel runs over), so a dead
// gateway process and a link that went down look alike: no answer. A tunnel that is up at
// both ends but broken in between (a wrong key) is not seen by them.
package health

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultPort is where Responders listen.
const DefaultPort = 10390

const (
	magic   = 0x57686c74 // "Whlt"
	msgSize = 4 + 1 + 8 + 8
	kindReq = 1
	kindRep = 2
)

// encode lays out a probe: magic, kind, sequence, the sender's clock at sending.
func encode(kind byte, seq uint64, sent int64) []byte {
	b := make([]byte, msgSize)
	binary.BigEndian.PutUint32(b[0:], magic)
	b[4] = kind
	binary.BigEndian.PutUint64(b[5:], seq)
	binary.BigEndian.PutUint64(b[13:], uint64(sent))
	return b
}

func decode(b []byte) (kind byte, seq uint64, sent int64, ok bool) {
	if len(b) != msgSize || binary.BigEndian.Uint32(b) != magic {
		return 0, 0, 0, false
	}
	return b[4], binary.BigEndian.Uint64(b[5:]), int64(binary.BigEndian.Uint64(b[13:])), true
}

// Respond echoes every probe received on conn until ctx ends or conn fails.
func Respond(ctx context.Context, conn net.PacketConn) error {
	go func() { <-ctx.Done(); _ = conn.Close() }()
	buf := make([]byte, 64)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		kind, seq, sent, ok := decode(buf[:n])
		if !ok || kind != kindReq {
			continue
		}
		_, _ = conn.WriteTo(encode(kindRep, seq, sent), from)
	}
}

// Options tune a Prober.
type Options struct {
	// Interval between probes to each target (default 100 ms).
	Interval time.Duration
	// FailAfter intervals without an answer make a target down (default 3).
	FailAfter int
	// RiseAfter answers in a row make a down target up (default 2).
	RiseAfter int
	// OnChange is called whenever a target goes up or down, in order, from one goroutine.
	OnChange func(target netip.AddrPort, up bool)
}

// Status is what the Prober knows of a target.
type Status struct {
	Target    netip.AddrPort
	Up        bool
	LastReply time.Time
	RTT       time.Duration // smoothed
	Sent      uint64
	Received  uint64
}

type target struct {
	Status
	streak int // answers in a row while down
	seq    uint64
}

// Prober probes a set of targets from one UDP socket.
type Prober struct {
	opts Options
	conn net.PacketConn

	mu      sync.Mutex
	targets map[netip.AddrPort]*target
	start   time.Time
	events  chan Status // changes, queued in order under mu
}

// NewProber probes from conn (bound where probes must leave from).
func NewProber(conn net.PacketConn, opts Options) *Prober {
	if opts.Interval <= 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.FailAfter <= 0 {
		opts.FailAfter = 3
	}
	if opts.RiseAfter <= 0 {
		opts.RiseAfter = 2
	}
	return &Prober{opts: opts, conn: conn, targets: map[netip.AddrPort]*target{}, start: time.Now(),
		events: make(chan Status, 1024)}
}

// SetTargets makes the probed targets exactly these; new ones start down.
func (p *Prober) SetTargets(targets []netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[netip.AddrPort]bool{}
	for _, t := range targets {
		want[t] = true
		if p.targets[t] == nil {
			p.targets[t] = &target{Status: Status{Target: t}}
		}
	}
	for t := range p.targets {
		if !want[t] {
			delete(p.targets, t)
		}
	}
}

// Status reports every target.
func (p *Prober) Status() []Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Status, 0, len(p.targets))
	for _, t := range p.targets {
		out = append(out, t.Status)
	}
	return out
}

// Answering returns the addresses of the targets that are up.
func (p *Prober) Answering() map[netip.Addr]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	up := map[netip.Addr]bool{}
	for addr, t := range p.targets {
		if t.Up {
			up[addr.Addr()] = true
		}
	}
	return up
}

// now is a monotonic clock in nanoseconds since the Prober started.
func (p *Prober) now() int64 { return int64(time.Since(p.start)) }

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) error {
	go func() { <-ctx.Done(); _ = p.conn.Close() }()
	recvErr := make(chan error, 1)
	go func() { recvErr <- p.receive() }()
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		for {
			select {
			case c := <-p.events:
				if p.opts.OnChange != nil {
					p.opts.OnChange(c.Target, c.Up)
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { <-dispatched }()
	tick := time.NewTicker(p.opts.Interval)
	defer tick.Stop()
	for {
		p.sendAll()
		select {
		case <-ctx.Done():
			<-recvErr
			return nil
		case err := <-recvErr:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case <-tick.C:
		}
	}
}

// sendAll sends one probe to each target and marks down those silent for too long.
func (p *Prober) sendAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	silence := time.Duration(p.opts.FailAfter) * p.opts.Interval
	for addr, t := range p.targets {
		t.seq++
		t.Sent++
		_, _ = p.conn.WriteTo(encode(kindReq, t.seq, p.now()), net.UDPAddrFromAddrPort(addr))
		switch {
		case t.Up && now.Sub(t.LastReply) > silence:
			t.Up, t.streak = false, 0
			p.events <- t.Status
		case !t.Up && now.Sub(t.LastReply) > p.opts.Interval*3/2:
			t.streak = 0 // rising needs answers in a row
		}
	}
}

func (p *Prober) receive() error {
	buf := make([]byte, 64)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		kind, _, sent, ok := decode(buf[:n])
		if !ok || kind != kindRep {
			continue
		}
		udp, _ := from.(*net.UDPAddr)
		if udp == nil {
			continue
		}
		ap := udp.AddrPort()
		addr := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		rtt := time.Duration(p.now() - sent)
		p.mu.Lock()
		t := p.targets[addr]
		if t != nil {
			t.Received++
			t.LastReply = time.Now()
			if t.RTT == 0 {
				t.RTT = rtt
			} else {
				t.RTT = (7*t.RTT + rtt) / 8
			}
			if !t.Up {
				t.streak++
				if t.streak >= p.opts.RiseAfter {
					t.Up, t.streak = true, 0
					p.events <- t.Status
				}
			}
		}
		p.mu.Unlock()
	}
}
