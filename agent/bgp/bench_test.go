package bgp_test

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BenchmarkRouterLearns measures, against BIRD and FRR, how long a new node block takes
// from the speaker's Apply to the router's forwarding table (p50/p99 over 40 blocks), and
// how long 1,000 prefixes announced at once take to be all there. The router's table is
// watched through netlink in its namespace: no polling in the measurement.
func BenchmarkRouterLearns(b *testing.B) {
	for _, kind := range []string{"bird", "frr"} {
		b.Run(kind, func(b *testing.B) { benchRouter(b, kind) })
	}
}

func benchRouter(b *testing.B, kind string) {
	l := newLab(b, kind, 0)
	s := startSpeaker(b, l.nodes[0])
	base := l.config(0)
	s.apply(base)
	if err := l.router.WaitRoute(b.Context(), block(0), l.ips[:1], 30*time.Second); err != nil {
		b.Fatal(err)
	}
	h, err := netns.GetFromName(l.router.Netns)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	updates := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		b.Fatal(err)
	}
	arrived := func(want map[netip.Prefix]bool, limit time.Duration) error {
		deadline := time.After(limit)
		for len(want) > 0 {
			select {
			case u := <-updates:
				if u.Type != unix.RTM_NEWROUTE || u.Dst == nil {
					continue
				}
				p, ok := netip.AddrFromSlice(u.Dst.IP)
				if !ok {
					continue
				}
				ones, _ := u.Dst.Mask.Size()
				delete(want, netip.PrefixFrom(p.Unmap(), ones))
			case <-deadline:
				return fmt.Errorf("%d prefixes not at the router after %v", len(want), limit)
			}
		}
		return nil
	}
	for range b.N {
		var lat []time.Duration
		prefixes := append([]netip.Prefix(nil), base.Prefixes...)
		for i := range 40 {
			p := netip.MustParsePrefix(fmt.Sprintf("10.250.%d.0/24", i))
			prefixes = append(prefixes, p)
			cfg := base
			cfg.Prefixes = append([]netip.Prefix(nil), prefixes...)
			start := time.Now()
			s.apply(cfg)
			if err := arrived(map[netip.Prefix]bool{p: true}, 10*time.Second); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "new-block-p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "new-block-p99-ms")

		many := append([]netip.Prefix(nil), base.Prefixes...)
		want := map[netip.Prefix]bool{}
		for i := range 1000 {
			p := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 200+i/256, i%256))
			many = append(many, p)
			want[p] = true
		}
		cfg := base
		cfg.Prefixes = many
		start := time.Now()
		s.apply(cfg)
		if err := arrived(want, 60*time.Second); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "1000-prefixes-ms")
		s.apply(base) // back, for the next round
		time.Sleep(2 * time.Second)
	}
}

// BenchmarkBFDDetection measures, against BIRD and FRR, how long the router takes to drop
// a frozen speaker's route with BFD at 100 ms × 3 (p50 and max over 5 freezes), beside the
// baseline measured in the same run: one freeze without BFD, which only the 9 s hold time
// ends.
func BenchmarkBFDDetection(b *testing.B) {
	for _, kind := range []string{"bird", "frr"} {
		b.Run(kind, func(b *testing.B) {
			for range b.N {
				l := newLab(b, kind, 100*time.Millisecond)
				s := startSpeaker(b, l.nodes[0])
				s.apply(l.config(0, withBFD))
				var lat []time.Duration
				for range 5 {
					lat = append(lat, freezeAndWait(b, l, s, true, 5*time.Second))
					if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
						b.Fatal(err)
					}
				}
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "bfd-p50-ms")
				b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "bfd-max-ms")

				// Baseline: the same freeze without BFD.
				s.apply(l.config(0))
				hold := freezeAndWait(b, l, s, false, 20*time.Second)
				_ = s.cmd.Process.Signal(syscall.SIGCONT)
				b.ReportMetric(float64(hold.Milliseconds()), "hold-timer-ms")
			}
		})
	}
}
