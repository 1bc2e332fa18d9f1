// Command labtool is the lab's small multi-call helper, kept apart from weftctl so that
// long-running lab processes stay light: called as agnhost or pause (through the lab's image
// directories) it is the built-in test image; `labtool forward --to ADDR` relays the
// listener on fd 3 to ADDR (the lab's loopback forwards).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/weft-net/weft/lab/agnhost"
	"github.com/weft-net/weft/lab/forward"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "agnhost":
		os.Exit(agnhost.Main(os.Args[1:]))
	case "pause":
		os.Exit(agnhost.Main([]string{"pause"}))
	}
	if len(os.Args) > 1 && os.Args[1] == "forward" {
		fs := flag.NewFlagSet("forward", flag.ExitOnError)
		to := fs.String("to", "", "address to relay to")
		_ = fs.Parse(os.Args[2:])
		l, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "labtool forward: inherited listener (fd 3):", err)
			os.Exit(1)
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := forward.Forward(ctx, l, *to); err != nil {
			fmt.Fprintln(os.Stderr, "labtool forward:", err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintln(os.Stderr, "labtool: call as agnhost or pause, or `labtool forward --to ADDR`")
	os.Exit(2)
}
