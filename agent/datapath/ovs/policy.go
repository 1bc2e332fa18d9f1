package ovs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/ovs/openflow"
	"github.com/weft-net/weft/internal/statefile"
)

// policyFile keeps the policy tables in the agent's state directory, so that a restarted
// agent enforces the last policy from its first flow update on (there is no window with
// no policy while it reads the API again).
const policyFile = "ovs-policy.json"

// SetPolicy compiles the policy into the policy tables and replaces the flow table in one
// bundle: no packet sees a mix of the old and new policy, and committed connections go on.
func (d *Driver) SetPolicy(ctx context.Context, p datapath.Policy) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.gwIP.IsValid() {
		return errors.New("the datapath is not initialized")
	}
	prog, err := policyFlows(p.Pipeline, p.ServiceCIDRs, d.gwIP, p.DNSPods, p.DNSServers, d.ruleSlots())
	if err != nil {
		return err
	}
	old := d.policy
	var before map[uint32]uint64
	if old != nil && len(old.Slots) > 0 {
		before, _ = readRuleFlows(ctx, d.ofTarget()) // unreadable: counts go on from the flows that stay
	}
	d.policy = &prog
	if err := d.syncFlows(ctx); err != nil {
		d.policy = old
		return err
	}
	if before != nil {
		after, _ := readRuleFlows(ctx, d.ofTarget())
		carryCounts(old, &prog, before, after)
	}
	if err := d.revalidate(ctx); err != nil {
		return err
	}
	return d.savePolicy()
}

// revalidate waits until the datapath's cached flows follow the new tables: until then a
// packet matching a flow cached under the old policy (a broad one, say, from a ping) would
// still take the old way, and a new connection the policy denies could get through.
func (d *Driver) revalidate(ctx context.Context) error {
	target := "ovs-vswitchd" // a system Open vSwitch's, found through its pidfile
	if d.opts.OVSRunDir != "" {
		// weft-ovs (internal/ovsrun) names its control socket without the pid.
		if ctl := filepath.Join(d.opts.OVSRunDir, "ovs-vswitchd.ctl"); fileExists(ctl) {
			target = ctl
		}
	}
	cmd := exec.CommandContext(ctx, "ovs-appctl", "-t", target, "revalidator/wait")
	if d.opts.OVSRunDir != "" {
		cmd.Env = append(os.Environ(), "OVS_RUNDIR="+d.opts.OVSRunDir)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ovs-appctl revalidator/wait: %w: %s", err, out)
	}
	return nil
}

// policyProgramOrDefault is the enforced policy: the last set, else none.
func (d *Driver) policyProgramOrDefault() (policyProgram, error) {
	if d.policy != nil {
		return *d.policy, nil
	}
	return policyFlows(nil, nil, d.gwIP, nil, nil, nil)
}

func (d *Driver) savePolicy() error {
	if d.opts.StateDir == "" || d.policy == nil {
		return nil
	}
	return statefile.PrivateJSON(filepath.Join(d.opts.StateDir, policyFile), d.policy)
}

// loadPolicy reads the policy saved by an earlier run (none: no policy yet).
func (d *Driver) loadPolicy() error {
	if d.opts.StateDir == "" || d.policy != nil {
		return nil
	}
	var prog policyProgram
	if found, err := statefile.ReadJSON(filepath.Join(d.opts.StateDir, policyFile), &prog); !found || err != nil {
		return err
	}
	d.policy = &prog
	return nil
}

// ruleSlots are the enforced policy's rule numbers, for the next compile to keep.
func (d *Driver) ruleSlots() *datapath.RuleSlots {
	if d.policy == nil {
		return nil
	}
	return datapath.NewRuleSlots(maxRuleSlots, d.policy.Slots)
}

// RuleCounts reads the policy flows' counters over OpenFlow (a connection of its own) and
// adds them up by rule, with what the rule's flows that are gone had counted (Base).
// Userspace Open vSwitch credits cached flows' packets to the tables about once a second.
func (d *Driver) RuleCounts(ctx context.Context) ([]datapath.RuleCount, error) {
	d.mu.Lock()
	prog, target := d.policy, d.ofTarget()
	d.mu.Unlock()
	if prog == nil || len(prog.Slots) == 0 {
		return nil, nil
	}
	read, err := readRuleFlows(ctx, target)
	if err != nil {
		return nil, err
	}
	out := make([]datapath.RuleCount, 0, len(prog.Slots))
	for _, e := range prog.Slots {
		out = append(out, datapath.RuleCount{Rule: e.Rule, Packets: prog.Base[e.Slot] + read[e.Slot]})
	}
	return out, nil
}

// readRuleFlows adds up the policy flows' packets by rule number.
func readRuleFlows(ctx context.Context, target string) (map[uint32]uint64, error) {
	timeout := 2 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	c, err := openflow.DialWriter(target, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stats, err := c.FlowStats(cookieBase, uint64(0xff)<<56, timeout)
	if err != nil {
		return nil, fmt.Errorf("reading the policy flows' counters: %w", err)
	}
	read := map[uint32]uint64{}
	for _, f := range stats {
		if f.Cookie&cookieDNS == 0 {
			read[uint32(f.Cookie)] += f.Packets
		}
	}
	return read, nil
}

// carryCounts sets next's Base so that each rule enforced before and after counts on from
// its total before (a rule's flows change with its pods and peers, and a removed flow takes
// its packets with it). before and after are the flows' counts around the change (nil: not
// read; the counts then go on from the flows that stay).
func carryCounts(prev, next *policyProgram, before, after map[uint32]uint64) {
	next.Base = map[uint32]uint64{}
	if prev == nil || before == nil || after == nil {
		if prev != nil {
			maps.Copy(next.Base, prev.Base)
		}
		return
	}
	for _, e := range next.Slots {
		total := prev.Base[e.Slot] + before[e.Slot]
		if !slices.Contains(prev.Slots, e) || total <= after[e.Slot] {
			continue // a new rule (its flows' counts are its own), or nothing to carry
		}
		next.Base[e.Slot] = total - after[e.Slot]
	}
}

// ruleInfo names the rule of a policy flow's cookie.
func (d *Driver) ruleInfo(id uint32) (datapath.RuleInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.policy == nil {
		return datapath.RuleInfo{}, false
	}
	r, ok := d.policy.Rules[id]
	return r, ok
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
