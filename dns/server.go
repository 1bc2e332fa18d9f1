package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Serve answers on addr over UDP and TCP until ctx ends. ready, when set, is called once
// both listeners are open.
//
// UDP is read by one socket per CPU bound to the same address with SO_REUSEPORT (the
// kernel spreads clients over them), each with its own reader answering through the fast
// path of wire.go; TCP goes through miekg's server.
func Serve(ctx context.Context, addr string, a *Answerer, ready func(udp, tcp net.Addr)) error {
	conns, l, err := listen(ctx, addr, runtime.GOMAXPROCS(0))
	if err != nil {
		return fmt.Errorf("weft-dns: %w", err)
	}
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	tcp := &dns.Server{Listener: l, Handler: a, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	errs := make(chan error, len(conns)+1)
	go func() { errs <- tcp.ActivateAndServe() }()
	var readers sync.WaitGroup
	for _, c := range conns {
		readers.Go(func() {
			if err := readUDP(c, a); err != nil {
				errs <- err
			}
		})
	}
	if ready != nil {
		ready(conns[0].LocalAddr(), l.Addr())
	}
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	closeAll()
	readers.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return errors.Join(err, tcp.ShutdownContext(sctx))
}

// listen opens n UDP sockets on addr and a TCP listener on the same port. With port 0 the
// UDP socket picks the port, which a TCP socket may already hold: then it tries another.
func listen(ctx context.Context, addr string, n int) ([]*net.UDPConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 1; ; attempt++ {
		conns, err := listenUDP(ctx, addr, n)
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp", conns[0].LocalAddr().String())
		if err == nil {
			return conns, l, nil
		}
		for _, c := range conns {
			_ = c.Close()
		}
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || attempt == 10 {
			return nil, nil, err
		}
	}
}

// listenUDP opens n UDP sockets on addr sharing its port (the first one picks it when the
// port is 0).
func listenUDP(ctx context.Context, addr string, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	var conns []*net.UDPConn
	for i := 0; i < max(n, 1); i++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, err
		}
		conns = append(conns, pc.(*net.UDPConn))
		addr = pc.LocalAddr().String()
	}
	return conns, nil
}

// readUDP answers queries from c until it is closed.
func readUDP(c *net.UDPConn, a *Answerer) error {
	buf := make([]byte, dns.MaxMsgSize)
	s := &udpScratch{out: make([]byte, 0, 4096)}
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("weft-dns: reading UDP: %w", err)
		}
		start := time.Now()
		if resp := a.answerUDP(buf[:n], s); resp != nil {
			a.count(questionType(buf[:n]), int(resp[3]&0x0f), start)
			_, _ = c.WriteToUDPAddrPort(resp, from)
		}
	}
}
