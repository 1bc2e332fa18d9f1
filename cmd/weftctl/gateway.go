package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

func gatewayCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "gateway", Short: "Act on one gateway of a cluster"}
	cmd.AddCommand(rotateKeyCommand())
	return cmd
}

func rotateKeyCommand() *cobra.Command {
	var kubeconfig, kctx string
	var lead, timeout time.Duration
	var wait bool
	cmd := &cobra.Command{
		Use:   "rotate-key NODE",
		Short: "Give the gateway on NODE a new WireGuard key pair, with no gap in traffic",
		Long: `rotate-key asks the gateway on NODE for a new key pair. The gateway makes it on the node
(the private key never leaves it) and announces the new public key and the moment it
switches, --lead from now; peer clusters learn both through their ClusterPeers. The peer
gateways take the new key 200 ms before that moment and the gateway switches at it, then
handshakes at once (had both ends switched together, their handshakes would cross and
WireGuard would retry only 5 s later). The lead must cover how long peers take to read
this cluster (the operator's --peer-resync, 10s by default). With --wait (the default) the
command waits for the switch and reports the handshakes made with the new key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if lead < time.Second {
				return fmt.Errorf("--lead %s: must be at least 1s", lead)
			}
			cl, err := contextCluster(kubeconfig, kctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), lead+timeout)
			defer cancel()
			return rotateKey(ctx, os.Stdout, cl.Client, args[0], time.Now().Add(lead), wait)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&kctx, "context", "", "context of the cluster (default: the current context)")
	f.DurationVar(&lead, "lead", 15*time.Second, "how long before the switch the new key is announced")
	f.BoolVar(&wait, "wait", true, "wait for the switch and report the handshakes with the new key")
	f.DurationVar(&timeout, "timeout", time.Minute, "how long to wait beyond --lead")
	return cmd
}

// rotateKey writes the rotation request in the gateway's FabricGateway (spec.rotateKeyAt)
// and, with wait, follows its status until it switched and its tunnels handshook anew.
func rotateKey(ctx context.Context, out io.Writer, c client.Client, node string, at time.Time, wait bool) error {
	fg := &fabricv1.FabricGateway{}
	if err := c.Get(ctx, client.ObjectKey{Name: node}, fg); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("no gateway on node %s (kubectl get fabricgateways lists them; see weftctl status)", node)
		}
		return fmt.Errorf("FabricGateway %s: %w", node, err)
	}
	before := fg.Status
	if before.Tunnel != "" && before.Tunnel != fabricv1.TunnelWireGuard {
		return fmt.Errorf("the gateway on %s runs a %s tunnel, which has no keys", node, before.Tunnel)
	}
	request := at.UTC().Format(time.RFC3339Nano)
	patch, _ := json.Marshal(map[string]any{"spec": map[string]string{"rotateKeyAt": request}})
	if err := c.Patch(ctx, fg, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("asking the gateway for a new key: %w", err)
	}
	fmt.Fprintf(out, "gateway %s: rotation requested, switch at %s (current key %s)\n", node, at.Format(time.RFC3339), before.PublicKey)
	if !wait {
		return nil
	}
	var announced string
	var switchAt time.Time
	for {
		if err := c.Get(ctx, client.ObjectKey{Name: node}, fg); err != nil {
			return err
		}
		st := fg.Status
		if st.NextPublicKey != "" && st.KeySwitchTime != nil && announced == "" {
			announced, switchAt = st.NextPublicKey, st.KeySwitchTime.Time
			fmt.Fprintf(out, "gateway %s: next key %s announced, switch at %s\n", node, announced, switchAt.Format(time.RFC3339))
		}
		if announced != "" && st.PublicKey == announced && st.NextPublicKey == "" {
			return reportHandshakes(ctx, out, c, node, announced, switchAt)
		}
		if announced == "" && st.LastKeyRotation == request && st.PublicKey == before.PublicKey {
			return fmt.Errorf("gateway %s dropped the request (see its events and log)", node)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gateway %s did not switch keys in time (is it running? see weftctl status and its log)", node)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// reportHandshakes waits (up to 15 s: gateways report their tunnels every 5 s) until every
// active tunnel of the gateway handshook since the switch, and says how many did. Reported
// handshake times have whole seconds, so one in the second of the switch counts.
func reportHandshakes(ctx context.Context, out io.Writer, c client.Client, node, key string, switchAt time.Time) error {
	fmt.Fprintf(out, "gateway %s: switched to %s\n", node, key)
	switched := switchAt.Truncate(time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		fg := &fabricv1.FabricGateway{}
		if err := c.Get(ctx, client.ObjectKey{Name: node}, fg); err != nil {
			return err
		}
		fresh, active := 0, 0
		for _, t := range fg.Status.Tunnels {
			if t.State != fabricv1.TunnelActive {
				continue
			}
			active++
			if t.LastHandshakeTime != nil && !t.LastHandshakeTime.Time.Before(switched) {
				fresh++
			}
		}
		if (fresh == active && active > 0) || time.Now().After(deadline) {
			fmt.Fprintf(out, "gateway %s: %d of %d active tunnels handshook with the new key\n", node, fresh, active)
			if fresh < active {
				return fmt.Errorf("gateway %s: %d active tunnels have not handshaken since the switch (see weftctl status)", node, active-fresh)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
