package ovs

import (
	"context"
	"net/netip"
	"time"

	"k8s.io/klog/v2"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ovs/openflow"
	"github.com/weft-net/weft/agent/datapath/packet"
)

// startController starts, once, the loop that takes the packets policy flows send to the
// agent: it answers Reject rules and reports logged connections. It returns once connected
// (or after 2 s): a packet sent to no controller is lost — a Reject unanswered.
func (d *Driver) startController(ctx context.Context) {
	if d.stopController != nil {
		return
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.stopController = cancel
	up := make(chan struct{})
	go d.serveController(cctx, d.ofTarget(), up)
	select {
	case <-up:
	case <-time.After(2 * time.Second):
	}
}

// serveController reads packet-ins until ctx ends, reconnecting when the switch restarts;
// up is closed on the first connection.
func (d *Driver) serveController(ctx context.Context, target string, up chan struct{}) {
	log := klog.FromContext(ctx).WithName("ovs-controller")
	connected := false
	for ctx.Err() == nil {
		c, err := openflow.Dial(target, 5*time.Second)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		if connected {
			// The connection broke: the switch may have restarted with an empty table.
			d.resync(ctx, log)
		}
		if !connected {
			close(up)
		}
		connected = true
		stop := context.AfterFunc(ctx, func() { c.Close() })
		for {
			pi, err := c.ReadPacketIn()
			if err != nil {
				if ctx.Err() == nil {
					log.V(2).Info("OpenFlow connection to the bridge ended; reconnecting", "err", err)
				}
				break
			}
			d.handlePacketIn(c, pi, log)
		}
		stop()
		c.Close()
	}
}

func (d *Driver) handlePacketIn(c *openflow.Conn, pi openflow.PacketIn, log klog.Logger) {
	if pi.Cookie>>56 != cookieBase>>56 {
		return
	}
	id := uint32(pi.Cookie)
	flags := pi.Cookie >> cookieFlagsAt & 0xff
	if flags&(cookieDNS>>cookieFlagsAt) != 0 {
		d.learnDNS(c, pi, log)
		return
	}
	if flags&(cookieReject>>cookieFlagsAt) != 0 {
		if ans, err := packet.Reject(pi.Data); err == nil {
			if err := c.Inject(ans, 5, reg5Injected); err != nil {
				log.Error(err, "sending a rejection")
			}
		}
	}
	if flags&(cookieLog>>cookieFlagsAt) != 0 && d.opts.OnPolicyEvent != nil {
		in, err := packet.Parse(pi.Data)
		if err != nil {
			return
		}
		rule, ok := d.ruleInfo(id)
		if !ok {
			rule = datapath.RuleInfo{Policy: "(unknown rule)"}
		}
		d.opts.OnPolicyEvent(datapath.PolicyEvent{Rule: rule, Src: in.Src, Dst: in.Dst, Protocol: in.ProtocolName(),
			SrcPort: int(in.SrcPort), DstPort: int(in.DstPort)})
	}
}

// learnDNS hands a DNS answer to the agent, then delivers it: by the time the pod reads the
// answer, the policy allows the addresses its FQDN rules matched.
func (d *Driver) learnDNS(c *openflow.Conn, pi openflow.PacketIn, log klog.Logger) {
	var pod netip.Addr // the answer's destination
	if in, err := packet.Parse(pi.Data); err == nil {
		pod = in.Dst
	}
	d.dnsHolder.Hold(pod, pi.Data, func() {
		if err := c.Inject(pi.Data, 5, reg5Injected); err != nil {
			log.Error(err, "delivering a DNS answer")
		}
	})
}

// resync replaces the whole flow table (after the switch may have restarted), again while
// pods' ports are still being attached (for up to 5 s: a port whose device is gone never is).
func (d *Driver) resync(ctx context.Context, log klog.Logger) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		done, err := d.resyncOnce(ctx)
		if err != nil {
			log.Error(err, "restoring the flow table after the switch came back")
		}
		if done || time.Now().After(deadline) || ctx.Err() != nil {
			log.Info("flow table restored after the OpenFlow connection to the switch came back", "allPortsAttached", done)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *Driver) resyncOnce(ctx context.Context) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return true, nil
	}
	d.applied = nil
	if err := d.syncFlows(ctx); err != nil {
		return false, err
	}
	pods, err := d.pods()
	if err != nil {
		return false, err
	}
	for _, p := range pods {
		if !d.attached(hostIfName(p.Key)) {
			return false, nil
		}
	}
	return true, nil
}
