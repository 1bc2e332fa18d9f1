package policysync

import (
	"context"
	"net/netip"
	"time"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/policy/oracle"
)

// What one pod's DNS answers may make its FQDN rules allow. Answers reach the agent only
// from a trusted resolver, in reply to a query the pod sent it (the datapath checks both);
// these bound what even a trusted resolver — or whoever answers through it — can open.
const (
	// MinDNSTTL is the least time a learnt address stays allowed: answers with shorter TTLs
	// are kept this long, so a pod that connects a moment after resolving is not refused.
	MinDNSTTL = 30 * time.Second
	// MaxDNSTTL caps it: an address is allowed at most this long after the last answer
	// that gave it (a pod that goes on using it resolves again, as clients do).
	MaxDNSTTL = time.Hour
	// MaxAddrsPerName bounds the addresses a pod keeps for one name; the one expiring
	// soonest makes room for a new one.
	MaxAddrsPerName = 64
	// MaxNamesPerPod bounds the names a pod keeps; answers for more are not learnt until
	// some expire.
	MaxNamesPerPod = 1024
	// maxHold bounds how long an answer waits for the policy update that allows its
	// addresses; then it is delivered anyway (the update follows).
	maxHold = time.Second
)

// fqdnCache holds, per pod, the addresses DNS answers gave names, until they expire.
type fqdnCache map[netip.Addr]map[string]map[netip.Addr]time.Time

// learn records an answer to pod, for the names one of patterns (the pod's FQDN rules')
// matches, and reports whether it brought a name an address it did not have.
func (c fqdnCache) learn(pod netip.Addr, patterns []string, recs []datapath.DNSRecord, now time.Time) bool {
	added := false
	for _, r := range recs {
		if !matchesAny(patterns, r.Name) {
			continue
		}
		names := c[pod]
		if names == nil {
			names = map[string]map[netip.Addr]time.Time{}
			c[pod] = names
		}
		addrs := names[r.Name]
		if addrs == nil {
			if len(names) >= MaxNamesPerPod {
				continue
			}
			addrs = map[netip.Addr]time.Time{}
			names[r.Name] = addrs
		}
		exp := now.Add(min(max(r.TTL, MinDNSTTL), MaxDNSTTL))
		old, ok := addrs[r.Addr]
		if !ok || !old.After(now) {
			added = true
			if !ok && len(addrs) >= MaxAddrsPerName {
				delete(addrs, soonest(addrs))
			}
		}
		if exp.After(old) {
			addrs[r.Addr] = exp
		}
	}
	return added
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if oracle.FQDNMatches(p, name) {
			return true
		}
	}
	return false
}

// soonest is the address that expires first.
func soonest(addrs map[netip.Addr]time.Time) netip.Addr {
	var out netip.Addr
	var first time.Time
	for a, exp := range addrs {
		if !out.IsValid() || exp.Before(first) {
			out, first = a, exp
		}
	}
	return out
}

// resolved returns each pod's names' live addresses, forgetting expired ones and pods not in
// keep (gone, or no FQDN rule left), and when the next one expires (zero: none left).
func (c fqdnCache) resolved(now time.Time, keep map[netip.Addr][]string) (map[netip.Addr]map[string][]netip.Addr, time.Time) {
	out := map[netip.Addr]map[string][]netip.Addr{}
	var next time.Time
	for pod, names := range c {
		if _, ok := keep[pod]; !ok {
			delete(c, pod)
			continue
		}
		for name, addrs := range names {
			for a, exp := range addrs {
				if !exp.After(now) {
					delete(addrs, a)
					continue
				}
				if out[pod] == nil {
					out[pod] = map[string][]netip.Addr{}
				}
				out[pod][name] = append(out[pod][name], a)
				if next.IsZero() || exp.Before(next) {
					next = exp
				}
			}
			if len(addrs) == 0 {
				delete(names, name)
			}
		}
		if len(names) == 0 {
			delete(c, pod)
		}
	}
	return out, next
}

// LearnDNS takes a DNS answer a pod is about to receive (the datapath holds it until this
// returns); when it brings an address the pod's FQDN rules do not allow yet, it returns once
// a policy update that includes it is applied, or after maxHold. Answers that come together
// share one update: the syncer's loop applies everything learnt since its last one.
func (s *Syncer) LearnDNS(ctx context.Context, ans datapath.DNSAnswer) {
	s.fqdnMu.Lock()
	if s.fqdn == nil {
		s.fqdn = fqdnCache{}
	}
	added := s.fqdn.learn(ans.Pod, s.fqdnPatterns[ans.Pod], ans.Records, time.Now())
	var applied chan struct{}
	if added {
		applied = make(chan struct{})
		s.learnWaiters = append(s.learnWaiters, applied)
	}
	s.fqdnMu.Unlock()
	if !added {
		return
	}
	poke(s.learntCh())
	t := time.NewTimer(maxHold)
	defer t.Stop()
	select {
	case <-applied:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (s *Syncer) learntCh() chan struct{} {
	s.changedOnce.Do(s.makeChannels)
	return s.learnt
}

// takeLearnWaiters returns the answers waiting for an update, which the next Sync includes.
func (s *Syncer) takeLearnWaiters() []chan struct{} {
	s.fqdnMu.Lock()
	defer s.fqdnMu.Unlock()
	w := s.learnWaiters
	s.learnWaiters = nil
	return w
}

// resolvedNow is the cache's live content for the node's pods with FQDN rules (patterns,
// which it keeps for learning), and arms the expiry timer.
func (s *Syncer) resolvedNow(patterns map[netip.Addr][]string) map[netip.Addr]map[string][]netip.Addr {
	s.fqdnMu.Lock()
	defer s.fqdnMu.Unlock()
	s.fqdnPatterns = patterns
	out, next := s.fqdn.resolved(time.Now(), patterns)
	s.nextExpiry = next
	return out
}

// poke wakes a loop without blocking (one pending wake-up is enough).
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Enforced reports how many policy rules the datapath enforces (the last applied policy's)
// and how many addresses the node's pods learnt from DNS answers (live or not yet expired
// at the last sync).
func (s *Syncer) Enforced() (rules, learnt int) {
	s.mu.Lock()
	if s.last != nil && s.last.Pipeline != nil {
		rules = s.last.Pipeline.Rules()
	}
	s.mu.Unlock()
	s.fqdnMu.Lock()
	defer s.fqdnMu.Unlock()
	for _, names := range s.fqdn {
		for _, addrs := range names {
			learnt += len(addrs)
		}
	}
	return rules, learnt
}
