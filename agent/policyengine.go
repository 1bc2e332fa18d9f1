package agent

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policysync"
)

// policyEngine keeps the tiers and policies this node enforces in step with the cluster's
// (agent/policysync on the shared cache), learns FQDN rules' addresses from the DNS answers
// the datapath sees, and logs the connections logged rules match. Until its first sync the
// datapath enforces the policy it saved last time.
type policyEngine struct {
	a      *agentState
	log    *policyLog
	syncer atomic.Pointer[policysync.Syncer] // set once started
	ctx    context.Context                   // run's, for the DNS answers learned
}

func newPolicyEngine(a *agentState) *policyEngine {
	return &policyEngine{a: a, log: newPolicyLog(a.cfg.PolicyLog, a.log)}
}

// event logs a connection a logged rule matched (called by the datapath).
func (p *policyEngine) event(e datapath.PolicyEvent) { p.log.event(e) }

// learnDNS hands a DNS answer the datapath saw to the syncer (FQDN rules).
func (p *policyEngine) learnDNS(ans datapath.DNSAnswer) {
	if s := p.syncer.Load(); s != nil {
		s.LearnDNS(p.ctx, ans)
	}
}

func (p *policyEngine) start(ctx context.Context, f *fabric) error {
	f.onStop(p.log.close)
	// The node network started first: the datapath is there.
	dp := f.datapath
	s := &policysync.Syncer{Node: p.a.cfg.NodeName, Datapath: dp, Reader: f.cache, Report: p.a.report.realizedPolicies, Log: p.a.log.WithName("policy")}
	if err := f.watch(ctx, s.Changed, policysync.Objects()...); err != nil {
		return err
	}
	if err := s.Sync(ctx); err != nil {
		p.a.log.Error(err, "first policy sync; the saved policy stays enforced")
	}
	p.ctx = ctx
	p.syncer.Store(s)
	f.spawn(func() { s.Run(ctx) }) // reports the first sync's policies too
	return nil
}

// sync brings the datapath's policy up to date now (before a pod is reported wired). A
// datapath that enforces no policy starts pods anyway; the node does not report the
// policies realized (their status says on how many nodes they are).
func (p *policyEngine) sync(ctx context.Context) error {
	s := p.syncer.Load()
	if s == nil {
		return errors.New("the policy engine has not started")
	}
	if err := s.Sync(ctx); err != nil && !errors.Is(err, datapath.ErrPolicyUnsupported) {
		return err
	}
	return nil
}
