package node_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netnstest"
	"github.com/weft-net/weft/internal/testenv"
)

// BenchmarkCNIAdd measures CNI ADD latency, as a container runtime sees it (plugin executed
// in the node's namespace, result parsed), of weft-cni beside the reference bridge plugin
// with host-local IPAM in the same run. DEL runs between ADDs, untimed. It reports the
// median and 99th percentile.
func BenchmarkCNIAdd(b *testing.B) {
	netnstest.RequireRoot(b)
	sw := netnstest.NewSwitch(b)
	n := newNode(b, sw, "bench-cni", "172.29.5.11", "10.99.6.0/24")
	p, sandbox := n.pod("bench-cni")

	b.Run("weft", func(b *testing.B) {
		measureAdds(b, func(cid string) error { return n.cni("ADD", cid, p, sandbox).err() },
			func(cid string) error { return n.cni("DEL", cid, p, sandbox).err() })
	})
	b.Run("bridge", func(b *testing.B) {
		plugins := cniPlugins(b)
		conf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"reference","type":"bridge","bridge":"refbr0",
"isGateway":true,"ipMasq":false,"mtu":1420,
"ipam":{"type":"host-local","ranges":[[{"subnet":"10.98.0.0/24"}]],"dataDir":%q}}`, b.TempDir()))
		call := func(command, cid string) error {
			out, errOut, err := n.execPlugin(filepath.Join(plugins, "bridge"), command, cid, p, sandbox, conf)
			if err != nil {
				return fmt.Errorf("bridge %s: %w: %s %s", command, err, out, errOut)
			}
			return nil
		}
		measureAdds(b, func(cid string) error { return call("ADD", cid) }, func(cid string) error { return call("DEL", cid) })
	})
}

func measureAdds(b *testing.B, add, del func(cid string) error) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cid := fmt.Sprintf("bench%06d", i)
		t0 := time.Now()
		if err := add(cid); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		if err := del(cid); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkPodToPodTCP measures TCP throughput between pods on two nodes across weft's
// overlay (userspace Open vSwitch here, Geneve), beside two namespaces joined by a bare veth
// pair in the same run. Each operation moves 64 MiB over a new connection.
func BenchmarkPodToPodTCP(b *testing.B) {
	netnstest.RequireRoot(b)
	// Set up once: the sub-benchmarks run several times while b.N is found.
	sw := netnstest.NewSwitch(b)
	n1 := newNode(b, sw, "bench-tp-1", "172.29.6.11", "10.99.7.0/24")
	n2 := newNode(b, sw, "bench-tp-2", "172.29.6.12", "10.99.8.0/24")
	pa, sa := n1.pod("bench-tp-client")
	pb, sb := n2.pod("bench-tp-server")
	if err := n1.cni("ADD", "tp-client", pa, sa).err(); err != nil {
		b.Fatal(err)
	}
	rb := n2.cni("ADD", "tp-server", pb, sb)
	if err := rb.err(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = n1.cni("DEL", "tp-client", pa, sa)
		_ = n2.cni("DEL", "tp-server", pb, sb)
	})
	if err := sa.PingUntil(podIP(rb).String(), 30*time.Second); err != nil {
		b.Fatal(err)
	}

	// The same MTU as the pods' (datapath.PodMTU: 1500 less the largest tunnel overhead).
	client, server := netnstest.VethPair(b, 1420)
	if err := client.PingUntil("10.97.0.2", 30*time.Second); err != nil {
		b.Fatal(err)
	}

	b.Run("weft-overlay", func(b *testing.B) { netnstest.BenchTCP(b, sb, sa, net.JoinHostPort(podIP(rb).String(), "5301")) })
	b.Run("raw-veth", func(b *testing.B) { netnstest.BenchTCP(b, server, client, "10.97.0.2:5301") })
}

// cniPlugins is the directory of the reference CNI plugins hack/lab-deps.sh builds.
func cniPlugins(b *testing.B) string {
	b.Helper()
	if dir := os.Getenv("WEFT_CNI_BIN"); dir != "" {
		return dir
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "hack", "lab-deps.sh"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		b.Fatalf("hack/lab-deps.sh: %v\n%s", err, errOut.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CNI_BIN="); ok {
			return v
		}
	}
	b.Fatal("hack/lab-deps.sh did not print CNI_BIN")
	return ""
}
