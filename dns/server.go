package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// Serve answers on addr over UDP and TCP until ctx ends. ready, when set, is called once
// both listeners are open.
func Serve(ctx context.Context, addr string, a *Answerer, ready func(udp, tcp net.Addr)) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("weft-dns: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("weft-dns: %w", err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: a, ReadTimeout: 2 * time.Second}
	tcp := &dns.Server{Listener: l, Handler: a, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	errs := make(chan error, 2)
	go func() { errs <- udp.ActivateAndServe() }()
	go func() { errs <- tcp.ActivateAndServe() }()
	if ready != nil {
		ready(pc.LocalAddr(), l.Addr())
	}
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return errors.Join(err, udp.ShutdownContext(sctx), tcp.ShutdownContext(sctx))
}
