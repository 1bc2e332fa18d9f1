package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/weft-net/weft/agent/datapath"
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
	prog, err := policyFlows(p.Pipeline, p.ServiceCIDRs, d.gwIP, p.DNSPods, p.DNSServers)
	if err != nil {
		return err
	}
	old := d.policy
	d.policy = &prog
	if err := d.syncFlows(ctx); err != nil {
		d.policy = old
		return err
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
	return policyFlows(nil, nil, d.gwIP, nil, nil)
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
	b, err := os.ReadFile(filepath.Join(d.opts.StateDir, policyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var prog policyProgram
	if err := json.Unmarshal(b, &prog); err != nil {
		return fmt.Errorf("%s: %w", policyFile, err)
	}
	d.policy = &prog
	return nil
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
