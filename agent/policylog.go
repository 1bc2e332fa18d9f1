package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/weft-net/weft/agent/datapath"
)

// policyLogMax is the size at which the policy log is rotated (one old file is kept).
const policyLogMax = 10 << 20

// policyLog writes one line per connection a logged rule matched: to the agent's log and
// to a file on the node.
type policyLog struct {
	path string
	log  klog.Logger
	mu   sync.Mutex
	f    *os.File
	size int64
}

func newPolicyLog(path string, log klog.Logger) *policyLog {
	return &policyLog{path: path, log: log.WithName("policy")}
}

func (p *policyLog) event(e datapath.PolicyEvent) {
	p.log.Info("policy rule matched", "action", e.Rule.Action, "direction", e.Rule.Direction, "tier", e.Rule.Tier,
		"policy", e.Rule.Policy, "rule", e.Rule.Rule, "src", fmt.Sprintf("%s:%d", e.Src, e.SrcPort),
		"dst", fmt.Sprintf("%s:%d", e.Dst, e.DstPort), "protocol", e.Protocol)
	if p.path == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.write(time.Now().UTC().Format(time.RFC3339Nano) + " " + e.String() + "\n"); err != nil {
		p.log.Error(err, "writing the policy log", "path", p.path)
	}
}

func (p *policyLog) write(line string) error {
	if p.f != nil && p.size+int64(len(line)) > policyLogMax {
		p.f.Close()
		p.f = nil
		if err := os.Rename(p.path, p.path+".1"); err != nil {
			return err
		}
	}
	if p.f == nil {
		if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(p.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		p.f, p.size = f, st.Size()
	}
	n, err := p.f.WriteString(line)
	p.size += int64(n)
	return err
}

func (p *policyLog) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}
