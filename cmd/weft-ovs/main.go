// Command weft-ovs runs Open vSwitch (ovsdb-server and ovs-vswitchd) in the foreground for
// the weft-agent pod's ovs container, so that Open vSwitch keeps forwarding while the agent
// container restarts or upgrades. When it stops, it gives the node's uplink back (see
// ovs.ReleaseUplink), so a node whose weft is removed keeps its network.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/weft-net/weft/agent/datapath/ovs"
	"github.com/weft-net/weft/internal/ovsrun"
)

func main() {
	o := ovsrun.Options{UserspaceTSO: true}
	flag.IntVar(&o.PacketSocketBuffer, "packet-socket-buffer", ovsrun.DefaultPacketSocketBuffer,
		"bytes of receive and send buffer on each of ovs-vswitchd's packet sockets (0: the kernel's default); the userspace datapath drops silently when they fill")
	flag.StringVar(&o.RunDir, "run-dir", "/var/run/openvswitch", "Open vSwitch run directory (sockets, pid files)")
	flag.StringVar(&o.DBDir, "db-dir", "/var/lib/openvswitch", "where conf.db lives (kept across restarts)")
	flag.StringVar(&o.LogDir, "log-dir", "/var/log/openvswitch", "log directory")
	release := flag.Bool("release-uplink", true,
		"when stopping, give the node's uplink back its addresses and routes (the userspace datapath forwards nothing once Open vSwitch exits; the next agent adopts the uplink again)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	in, err := ovsrun.Start(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-ovs:", err)
		os.Exit(1)
	}
	fmt.Println("weft-ovs: Open vSwitch is running; database", o.DBSocket())
	// Killed without SIGTERM, this container left the node's addresses on a bridge port that
	// died with it: put them back at once, without waiting for the agent.
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if n, err := ovs.RestoreUplink(rctx, o.DBSocket()); err != nil {
			fmt.Fprintln(os.Stderr, "weft-ovs: restoring the node's addresses on", ovs.ExternalBridge+":", err)
		} else if n > 0 {
			fmt.Println("weft-ovs: restored", n, "of the node's addresses and routes on", ovs.ExternalBridge)
		}
	}()
	exited := make(chan struct{})
	go func() { in.Wait(); close(exited) }()
	select {
	case <-ctx.Done():
		if *release && !in.OwnsDatabase() {
			fmt.Println("weft-ovs: another Open vSwitch instance has taken over the node's database; leaving the uplink to it")
		} else if *release {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if uplink, err := ovs.ReleaseUplink(rctx, o.DBSocket()); err != nil {
				fmt.Fprintln(os.Stderr, "weft-ovs: giving the uplink back:", err)
			} else if uplink != "" {
				fmt.Println("weft-ovs: gave the node's addresses and routes back to", uplink)
			}
			cancel()
		}
		in.Stop()
	case <-exited:
		fmt.Fprintln(os.Stderr, "weft-ovs: an Open vSwitch daemon exited; see", o.LogDir)
		os.Exit(1)
	}
}
