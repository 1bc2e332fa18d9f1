// Package forward relays TCP connections from a listener inherited from another network
// namespace (the host's loopback) to a target dialled from this one: how the host reaches
// the lab's API servers.
package forward

import (
	"context"
	"io"
	"net"
	"time"
)

// Forward accepts connections on l (opened in the host's network namespace and inherited)
// and relays each to target, dialled from the namespace this process runs in.
func Forward(ctx context.Context, l net.Listener, target string) error {
	go func() { <-ctx.Done(); _ = l.Close() }()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer conn.Close()
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
			go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
			<-done
		}()
	}
}
