package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/tunneltest"
)

// BenchmarkGateways brings up a two-cluster lab (both on the ebpf datapath) with two
// gateways per cluster and measures, pod to pod across the clusters: TCP throughput through
// the gateways, alone and in turns with a bare tunnel of weft's WireGuard driver, the same
// tunnel with a cluster's hops around it and Debian's wireguard-go beside the lab, over
// WEFT_TCP_ROUNDS (default 5) rounds; the time
// from a ServiceExport in one cluster to its clusterset name answering in the other and
// from its deletion to NXDOMAIN, over WEFT_MCS_ROUNDS (default 20) Services; and the
// failover gap over WEFT_FAILOVER_ROUNDS (default 20) failures of the gateway carrying a
// stream, alternating a killed process (cluster 1) and a pulled cable (cluster 2). Run
// with -benchtime 1x: the lab is the expensive part.
func BenchmarkGateways(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("the gateway benchmarks need root: they bring a lab up")
	}
	rounds, mcsRounds, tcpRounds := envRounds("WEFT_FAILOVER_ROUNDS", 20), envRounds("WEFT_MCS_ROUNDS", 20), envRounds("WEFT_TCP_ROUNDS", 5)
	// Both clusters on the ebpf datapath without encapsulation (each with its BGP router):
	// the datapath whose throughput through the gateways can come near the bare tunnel's
	// (userspace OVS, without its kernel module here, carries 0.05–0.1 Gbit/s across).
	lab, in, client, server, echo := peeredLab(b, "ebpf,ebpf", "bench-gateways")

	b.Run("cross-cluster-tcp", func(b *testing.B) {
		netnstest.BenchTCP(b, server, client, echo.Addr().String()+":7100")
	})

	// The same transfer, in turns, beside the lab (its control planes take about a third
	// of this machine's two cores): through a bare tunnel of the same WireGuard driver
	// between two namespaces; through that tunnel with a cluster's hops built by hand
	// around it (pod → node → tunnel end each way: what the path costs without weft); and
	// through Debian's wireguard-go. Each measurement times 64 MiB after 64 MiB of warm-up
	// on its connection; the ratios are medians of each round's (a round's transfers run
	// back to back, under the same load).
	b.Run("cross-cluster-vs-bare-tunnel", func(bb *testing.B) {
		b := printing{bb}
		bareClient, bareServer, bareAddr := tunneltest.BareTunnel(b, 12)
		routedClient, routedServer, routedAddr := tunneltest.RoutedTunnel(b, 14)
		debClient, debServer, debAddr := tunneltest.DebianTunnel(b, 13)
		const size = 64 << 20
		paths := []struct {
			name           string
			server, client *netnstest.Netns
			addr           string
		}{
			{"across the clusters", server, client, echo.Addr().String()},
			{"bare tunnel", bareServer, bareClient, bareAddr.String()},
			{"routed tunnel", routedServer, routedClient, routedAddr.String()},
			{"Debian's wireguard-go", debServer, debClient, debAddr.String()},
		}
		got := make([][]float64, len(paths))
		var toBare, toRouted, toDeb []float64
		for i := range tcpRounds {
			line := fmt.Sprintf("round %d:", i+1)
			for j, p := range paths {
				g, err := netnstest.MeasureTCP(p.server, p.client, p.addr+":7101", netnstest.WarmTCP, size)
				if err != nil {
					b.Fatalf("%s: %v", p.name, err)
				}
				got[j] = append(got[j], g)
				line += fmt.Sprintf(" %s %.3f Gbit/s,", p.name, g)
			}
			b.Logf("%s", strings.TrimSuffix(line, ","))
			c := got[0][i]
			toBare, toRouted, toDeb = append(toBare, c/got[1][i]), append(toRouted, c/got[2][i]), append(toDeb, c/got[3][i])
		}
		b.ReportMetric(median(got[0]), "cross-Gbit/s")
		b.ReportMetric(median(got[1]), "bare-Gbit/s")
		b.ReportMetric(median(got[2]), "routed-Gbit/s")
		b.ReportMetric(median(got[3]), "debian-Gbit/s")
		b.ReportMetric(median(toBare), "cross/bare")
		b.ReportMetric(median(toRouted), "cross/routed")
		b.ReportMetric(median(toDeb), "cross/debian")
		b.ReportMetric(0, "ns/op")
	})

	b.Run(fmt.Sprintf("export-to-resolvable-%d", mcsRounds), func(bb *testing.B) {
		b := printing{bb}
		var resolvable, gone []time.Duration
		for i, r := range exportToResolvable(b, lab, in.From, in.To, mcsRounds) {
			b.Logf("round %d: resolvable after %v, gone %v after the unexport", i+1, r.Resolvable.Round(time.Millisecond), r.Gone.Round(time.Millisecond))
			resolvable, gone = append(resolvable, r.Resolvable), append(gone, r.Gone)
		}
		p50, p99 := latencyPercentiles(resolvable)
		b.ReportMetric(float64(p50.Milliseconds()), "p50-resolvable-ms")
		b.ReportMetric(float64(p99.Milliseconds()), "p99-resolvable-ms")
		p50, p99 = latencyPercentiles(gone)
		b.ReportMetric(float64(p50.Milliseconds()), "p50-gone-ms")
		b.ReportMetric(float64(p99.Milliseconds()), "p99-gone-ms")
		b.ReportMetric(0, "ns/op")
	})

	benchFailover(b, lab, in, client, server, echo, rounds)
}

// BenchmarkFailoverOVS is BenchmarkGateways' failover gap on two clusters of the ovs
// datapath (overlay, two gateways each): WEFT_FAILOVER_ROUNDS (default 20) failures of the
// gateway carrying a stream, alternating a killed process and a pulled cable; p50, p99 and
// the longest gap printed. BenchmarkGateways prints the same for two ebpf clusters.
func BenchmarkFailoverOVS(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("the failover benchmark needs root: it brings a lab up")
	}
	rounds := envRounds("WEFT_FAILOVER_ROUNDS", 20)
	lab, in, client, server, echo := peeredLab(b, "ovs,ovs", "bench-failover-ovs")
	benchFailover(b, lab, in, client, server, echo, rounds)
}

// peeredLab brings up two peered three-node clusters on datapaths, with two gateways each,
// a client pod in weft-1 and a server pod in weft-2 (in namespace), and waits until flows
// are spread over both gateways.
func peeredLab(b *testing.B, datapaths, namespace string) (*Lab, FailoverInput, *netnstest.Netns, *netnstest.Netns, netip.AddrPort) {
	lab := upLab(b, 2, 3, datapaths)
	InstallWeft(b, InstallInput{Lab: lab, Cluster: "weft-1", PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.96.0.0/16"})
	InstallWeft(b, InstallInput{Lab: lab, Cluster: "weft-2", PodCIDR: "10.245.0.0/16", ServiceCIDR: "10.97.0.0/16"})
	PeerJoin(b, PeerInput{Lab: lab, From: "weft-1", To: "weft-2", ToPodCIDR: "10.245.0.0/16"})
	in := FailoverInput{Lab: lab, From: "weft-1", To: "weft-2", Namespace: namespace,
		FromPodCIDR: "10.244.0.0/16", ToPodCIDR: "10.245.0.0/16"}
	client, server, echo := failoverSetup(b, in)
	Eventually(b, time.Minute, func() error { return spread(b, lab, in.From, client, echo) })
	return lab, in, client, server, echo
}

// benchFailover fails the gateway carrying a stream rounds times, alternating a killed
// process (in.From) and a pulled cable (in.To), and reports the gaps' p50, p99 and maximum.
func benchFailover(b *testing.B, lab *Lab, in FailoverInput, client, server *netnstest.Netns, echo netip.AddrPort, rounds int) {
	b.Run(fmt.Sprintf("failover-%d", rounds), func(bb *testing.B) {
		b := printing{bb}
		var gaps []time.Duration
		for i := 0; i < rounds; i++ {
			cluster, act, how := in.From, killGateway(b, lab), "process kill"
			if i%2 == 1 {
				cluster, act, how = in.To, pullCable(b, lab), "cable pull"
			}
			gap, err := failover(b, lab, client, server, echo, cluster, act)
			if err != nil {
				b.Errorf("round %d (%s): %v", i+1, how, err)
			}
			b.Logf("round %d (%s): longest gap %v", i+1, how, gap.Round(time.Millisecond))
			gaps = append(gaps, gap)
			waitTwoGatewaysEachWay(b, in)
			Eventually(b, time.Minute, func() error { return spread(b, lab, in.From, client, echo) })
		}
		p50, p99 := latencyPercentiles(gaps) // (sorts gaps)
		b.ReportMetric(float64(p50.Milliseconds()), "p50-gap-ms")
		b.ReportMetric(float64(p99.Milliseconds()), "p99-gap-ms")
		b.ReportMetric(float64(gaps[len(gaps)-1].Milliseconds()), "max-gap-ms")
		b.ReportMetric(0, "ns/op")
	})
}

// envRounds is the positive count the environment variable name says, else def.
func envRounds(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// median is the middle of xs (the mean of the two middle ones for an even count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// printing is a benchmark whose log lines go to stdout as they come: the testing package
// keeps only the first lines of a benchmark's log, and every round's line matters.
type printing struct{ *testing.B }

func (p printing) Logf(format string, args ...any) {
	p.Helper()
	fmt.Printf("    %s: %s\n", p.Name(), fmt.Sprintf(format, args...))
}
