package ovs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/veth"
)

// Uninstall removes the pods' host veths and the integration bridge (with the gateway and
// tunnel ports, and so their flows and the gateway address), gives the uplink back to the
// node and removes the external bridge (netdev), and removes the driver's routes and its
// saved policy.
func (d *Driver) Uninstall(ctx context.Context, _ datapath.Node) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopController != nil {
		d.stopController()
		d.stopController = nil
	}
	if d.db == nil {
		db, err := connectOVSDB(ctx, d.opts.OVSDB)
		if err != nil {
			return err
		}
		d.db = db
	}
	var errs []error
	ifaces, err := d.db.interfaces(idPodKey)
	if err != nil {
		return err
	}
	for _, i := range ifaces {
		if err := (veth.Pair{Host: i.Name}).Delete(); err != nil {
			errs = append(errs, fmt.Errorf("pod interface %s: %w", i.Name, err))
		}
	}
	if err := d.db.deleteBridge(ctx, d.intBridge); err != nil {
		errs = append(errs, fmt.Errorf("bridge %s: %w", d.intBridge, err))
	} else if err := waitGone(ctx, GatewayPort, 5*time.Second); err != nil {
		// ovs-vswitchd removes the bridge's devices after the database says so.
		errs = append(errs, err)
	}
	if d.datapathType == "netdev" {
		// The uplink goes back to the node (addresses, routes), as weft-ovs does when it
		// stops, and the external bridge goes too.
		if _, err := ReleaseUplink(ctx, d.opts.OVSDB); err != nil {
			errs = append(errs, fmt.Errorf("giving the uplink back: %w", err))
		} else if err := d.db.deleteBridge(ctx, d.extBridge); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: %w", d.extBridge, err))
		} else if err := waitGone(ctx, d.extBridge, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := veth.DeleteRoutes(routeProtocol); err != nil {
		errs = append(errs, err)
	}
	if d.opts.StateDir != "" {
		if err := os.Remove(filepath.Join(d.opts.StateDir, policyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	d.policy, d.applied, d.remotes, d.peers = nil, nil, nil, datapath.PeerRoutes{}
	return errors.Join(errs...)
}

// waitGone waits until the node has no link of that name.
func waitGone(ctx context.Context, name string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := netlink.LinkByName(name); err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still there %s after its bridge was removed", name, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
