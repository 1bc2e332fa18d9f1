package policysync

import (
	"context"
	"net/netip"
	"time"

	"github.com/weft-net/weft/agent/datapath"
)

// MinDNSTTL is the least time a learnt address stays allowed: answers with shorter TTLs are
// kept this long, so a pod that connects a moment after resolving is not refused.
const MinDNSTTL = 30 * time.Second

// fqdnCache holds the addresses DNS answers gave names, until they expire.
type fqdnCache map[string]map[netip.Addr]time.Time

// learn records an answer and reports whether it brought a name an address it did not have.
func (c fqdnCache) learn(recs []datapath.DNSRecord, now time.Time) bool {
	added := false
	for _, r := range recs {
		exp := now.Add(max(r.TTL, MinDNSTTL))
		if c[r.Name] == nil {
			c[r.Name] = map[netip.Addr]time.Time{}
		}
		old, ok := c[r.Name][r.Addr]
		if !ok || !old.After(now) {
			added = true
		}
		if exp.After(old) {
			c[r.Name][r.Addr] = exp
		}
	}
	return added
}

// resolved returns the names' live addresses, forgetting expired ones, and when the next
// one expires (zero: none left).
func (c fqdnCache) resolved(now time.Time) (map[string][]netip.Addr, time.Time) {
	out := map[string][]netip.Addr{}
	var next time.Time
	for name, addrs := range c {
		for a, exp := range addrs {
			if !exp.After(now) {
				delete(addrs, a)
				continue
			}
			out[name] = append(out[name], a)
			if next.IsZero() || exp.Before(next) {
				next = exp
			}
		}
		if len(addrs) == 0 {
			delete(c, name)
		}
	}
	return out, next
}

// LearnDNS takes a DNS answer a pod is about to receive; when it brings an address the
// policy does not allow yet, the policy is recompiled and applied before it returns.
func (s *Syncer) LearnDNS(ctx context.Context, ans datapath.DNSAnswer) {
	s.fqdnMu.Lock()
	if s.fqdn == nil {
		s.fqdn = fqdnCache{}
	}
	added := s.fqdn.learn(ans.Records, time.Now())
	s.fqdnMu.Unlock()
	if added {
		if err := s.Sync(ctx); err != nil {
			s.Log.Error(err, "applying addresses learnt from DNS", "pod", ans.Pod)
		}
	}
}

// resolvedNow is the cache's live content, and arms the expiry timer.
func (s *Syncer) resolvedNow() map[string][]netip.Addr {
	s.fqdnMu.Lock()
	defer s.fqdnMu.Unlock()
	out, next := s.fqdn.resolved(time.Now())
	s.nextExpiry = next
	return out
}
