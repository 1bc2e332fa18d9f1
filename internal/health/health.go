// Package health tells, within a few hundred milliseconds, whether each gateway is alive
// (weft-gateway probes its peer clusters' gateways, weft-agent its own cluster's): a Prober sends a small UDP probe to every target every Interval and a Responder on
// each gateway echoes it. A target is down after FailAfter intervals without an answer and
// up again after RiseAfter answers in a row; every change is reported at once.
//
// Probes go to the gateway's node address. A target with a Via device is probed through
// that device — the tunnel to it — and answered back through the device the probe came in
// by, so an answer proves the tunnel carries traffic both ways: a dead gateway process, a
// link that went down, a tunnel not yet handshaken or one whose keys do not match all look
// alike, no answer. A target without Via is probed over whatever route the kernel picks
// (the underlay).
package health

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// DefaultPort is where Responders listen.
const DefaultPort = 10390

const (
	magic   = 0x57686c74 // "Whlt"
	msgSize = 4 + 1 + 8 + 8
	kindReq = 1
	kindRep = 2
	// kindReqVia asks for the answer to leave by the device the probe came in by.
	kindReqVia = 3
)

// encode lays out a probe: magic, kind, sequence (a Prober's is a random nonce), the
// sender's clock at sending.
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

// Respond echoes every probe received on conn until ctx ends or conn fails. A probe that
// came through a tunnel device (sent to a Via target) is answered through the same device,
// from the address it was sent to; conn must then be an IPv4 UDP socket. With answer set,
// only the probes from the addresses it accepts, when they come, are answered (nil: all):
// a gateway answers its peer gateways at once but its own cluster's agents only while it
// can carry their traffic.
func Respond(ctx context.Context, conn net.PacketConn, answer func(from netip.Addr) bool) error {
	go func() { <-ctx.Done(); _ = conn.Close() }()
	pc := ipv4.NewPacketConn(conn)
	// Without control messages (not IPv4) probes through tunnels are answered by the route.
	_ = pc.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true)
	buf := make([]byte, 64)
	for {
		n, cm, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		kind, seq, sent, ok := decode(buf[:n])
		if !ok || (kind != kindReq && kind != kindReqVia) {
			continue
		}
		if answer != nil {
			if ua, ok := from.(*net.UDPAddr); !ok || !answer(ua.AddrPort().Addr().Unmap()) {
				continue
			}
		}
		var out *ipv4.ControlMessage
		if kind == kindReqVia && cm != nil && cm.IfIndex != 0 {
			out = &ipv4.ControlMessage{IfIndex: cm.IfIndex, Src: cm.Dst}
		}
		_, _ = pc.WriteTo(encode(kindRep, seq, sent), out, from)
	}
}

// Options tune a Prober.
type Options struct {
	// Interval between probes to each target (default 50 ms).
	Interval time.Duration
	// FailAfter intervals without an answer make a target down (default 4: 200 ms of
	// silence with the default interval).
	FailAfter int
	// RiseAfter answers in a row make a down target up (default 2).
	RiseAfter int
	// OnChange is called whenever a target goes up or down, in order, from one goroutine.
	OnChange func(target Target, up bool)
}

// Target is what a Prober probes: a Responder's address and, when Via names a device, the
// device probes leave by and answers must come back by (a tunnel to the target; the
// Prober's socket must then be IPv4, bound to the address the target accepts from the
// tunnel). Via is looked up at every probe: a device that is missing or comes back with
// another index is followed.
type Target struct {
	Addr netip.AddrPort
	Via  string
}

// String is the address, and the device probes go through.
func (t Target) String() string {
	if t.Via == "" {
		return t.Addr.String()
	}
	return t.Addr.String() + " via " + t.Via
}

// Status is what the Prober knows of a target.
type Status struct {
	Target    Target
	Up        bool
	LastReply time.Time
	RTT       time.Duration // smoothed
	Sent      uint64
	Received  uint64
}

type target struct {
	Status
	streak  int // answers in a row while down
	ifIndex int // of Via at the last probe (0: not found)
	// nonces are the last probes' random sequence numbers (a Responder echoes them): only an
	// answer naming one counts, once. Anyone able to send from the target's address could
	// otherwise keep a dead gateway up.
	nonces [nonceWindow]uint64
	next   int
}

// nonceWindow is how many recent probes of a target an answer may be for: more than a
// round trip under load (FailAfter intervals) needs.
const nonceWindow = 16

// take reports whether n is one of t's outstanding probes, and forgets it.
func (t *target) take(n uint64) bool {
	for i, v := range t.nonces {
		if v == n && n != 0 {
			t.nonces[i] = 0
			return true
		}
	}
	return false
}

// Prober probes a set of targets from one UDP socket.
type Prober struct {
	opts Options
	conn net.PacketConn
	pc   *ipv4.PacketConn // conn, for probes and answers through a device
	src  net.IP           // conn's address, which probes through a device must carry
	// ifIndex finds a Via device at every probe, in conn's network namespace: a device
	// that is missing or comes back with another index is followed.
	ifIndex func(name string) (int, error)
	// pending says whether answers wait in conn's socket, unread.
	pending func() bool
	// recvMu is held while the receiver handles an answer (tests pause it with it).
	recvMu sync.Mutex

	mu        sync.Mutex
	lastRound time.Time // when sendAll last ran
	resumed   time.Time // when it ran after a stall
	// backlogSince is when answers were first found waiting unread (zero: none now).
	backlogSince time.Time
	targets      map[Target]*target
	start        time.Time
	events       chan Status // changes, queued in order under mu
}

// NewProber probes from conn (bound where probes must leave from).
func NewProber(conn net.PacketConn, opts Options) *Prober {
	if opts.Interval <= 0 {
		opts.Interval = 50 * time.Millisecond
	}
	if opts.FailAfter <= 0 {
		opts.FailAfter = 4
	}
	if opts.RiseAfter <= 0 {
		opts.RiseAfter = 2
	}
	pc := ipv4.NewPacketConn(conn)
	// Without control messages (not IPv4) no answer is matched to a Via target.
	_ = pc.SetControlMessage(ipv4.FlagInterface, true)
	var src net.IP
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsUnspecified() {
		src = a.IP // a control message's source would replace the bound one
	}
	ifIndex, pending := socketCalls(conn)
	return &Prober{opts: opts, conn: conn, pc: pc, src: src, targets: map[Target]*target{}, start: time.Now(),
		events: make(chan Status, 1024), ifIndex: ifIndex, pending: pending}
}

// socketCalls gives two system calls on conn's socket (so in conn's network namespace):
// ifIndex finds a device's index by an ioctl — one call and no allocation per probe
// (net.InterfaceByName dumps every link of the node: a gateway spent a tenth of its CPU
// there during a transfer) — and pending says whether a datagram waits unread (SIOCINQ):
// answers the receiver has not got to yet.
func socketCalls(conn net.PacketConn) (ifIndex func(name string) (int, error), pending func() bool) {
	var raw syscall.RawConn
	err := errors.New("health: the probe socket has no file descriptor")
	if sc, ok := conn.(syscall.Conn); ok {
		raw, err = sc.SyscallConn()
	}
	ifIndex = func(name string) (int, error) {
		if err != nil {
			return 0, err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return 0, err
		}
		var ierr error
		if err := raw.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), unix.SIOCGIFINDEX, ifr) }); err != nil {
			return 0, err
		}
		if ierr != nil {
			return 0, fmt.Errorf("device %s: %w", name, ierr)
		}
		return int(ifr.Uint32()), nil
	}
	pending = func() bool {
		if err != nil {
			return false
		}
		n := 0
		_ = raw.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		return n > 0
	}
	return ifIndex, pending
}

// SetTargets makes the probed targets exactly these; new ones start down.
func (p *Prober) SetTargets(targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[Target]bool{}
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

// Answering returns the addresses of the targets that are up (an address probed several
// ways is up when any of its targets is).
func (p *Prober) Answering() map[netip.Addr]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	up := map[netip.Addr]bool{}
	for tg, t := range p.targets {
		if t.Up {
			up[tg.Addr.Addr()] = true
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
			_ = <-recvErr // the receiver stops with the context; its error says only that
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
	// A round that comes two intervals late follows a stall of the prober itself (its
	// process starved of CPU, stopped, paused): it sent nothing meanwhile, and the answers
	// it got may still wait in its socket. Its silence is its own, not its targets': for an
	// interval the rounds only send, then they decide again.
	if !p.lastRound.IsZero() && now.Sub(p.lastRound) > 2*p.opts.Interval {
		p.resumed = now
	}
	p.lastRound = now
	// Answers waiting in the socket, unread, are the receiver's delay, not the targets'
	// silence: no decision until it has read them — for at most twice the silence that
	// makes a target down (a flood of datagrams must not keep a dead target up).
	if !p.pending() {
		p.backlogSince = time.Time{}
	} else if p.backlogSince.IsZero() {
		p.backlogSince = now
	}
	backlog := !p.backlogSince.IsZero() && now.Sub(p.backlogSince) < 2*silence
	stalled := now.Sub(p.resumed) < p.opts.Interval || backlog
	for tg, t := range p.targets {
		nonce := rand.Uint64() | 1 // (never 0: an empty slot)
		t.nonces[t.next] = nonce
		t.next = (t.next + 1) % nonceWindow
		t.Sent++
		to := net.UDPAddrFromAddrPort(tg.Addr)
		if tg.Via == "" {
			_, _ = p.conn.WriteTo(encode(kindReq, nonce, p.now()), to)
		} else if index, err := p.ifIndex(tg.Via); err != nil {
			t.ifIndex = 0 // no device, no probe: the target goes silent
		} else {
			t.ifIndex = index
			_, _ = p.pc.WriteTo(encode(kindReqVia, nonce, p.now()), &ipv4.ControlMessage{IfIndex: index, Src: p.src}, to)
		}
		switch {
		case t.Up && !stalled && now.Sub(t.LastReply) > silence:
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
		n, cm, from, err := p.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		kind, nonce, sent, ok := decode(buf[:n])
		if !ok || kind != kindRep {
			continue
		}
		udp, _ := from.(*net.UDPAddr)
		if udp == nil {
			continue
		}
		ap := udp.AddrPort()
		addr := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		ifIndex := 0
		if cm != nil {
			ifIndex = cm.IfIndex
		}
		rtt := time.Duration(p.now() - sent)
		p.recvMu.Lock()
		p.mu.Lock()
		if t := p.answered(addr, ifIndex); t != nil && t.take(nonce) {
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
		p.recvMu.Unlock()
	}
}

// answered finds the target an answer from addr, come in by device ifIndex, is for: the
// one probed through that device, else the one probed without a device.
func (p *Prober) answered(addr netip.AddrPort, ifIndex int) *target {
	for tg, t := range p.targets {
		if tg.Addr == addr && tg.Via != "" && ifIndex != 0 && t.ifIndex == ifIndex {
			return t
		}
	}
	return p.targets[Target{Addr: addr}]
}
