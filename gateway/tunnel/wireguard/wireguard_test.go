package wireguard_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/gateway/tunnel"
	"github.com/weft-net/weft/gateway/tunnel/wireguard"
	"github.com/weft-net/weft/internal/netnstest"
)

// The tests run each tunnel end in its own process started inside a network namespace (the
// test binary again, as a helper): a WireGuard device opens its sockets from its own
// goroutines, so the whole process must live in the namespace, as weft-gateway does on a node.
const helperEnv = "WEFT_WIREGUARD_TEST_HELPER"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		if err := helper(cfg, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type request struct {
	Op    string        `json:"op"` // peers, status
	Peers []tunnel.Peer `json:"peers,omitempty"`
}

type reply struct {
	Error     string              `json:"error,omitempty"`
	PublicKey string              `json:"publicKey,omitempty"`
	Mode      string              `json:"mode,omitempty"`
	Status    []tunnel.PeerStatus `json:"status,omitempty"`
}

// helper brings a tunnel up, answers requests line by line, and closes it at end of input.
func helper(cfgJSON string, in io.Reader, out io.Writer) error {
	var cfg tunnel.Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return err
	}
	reg := tunnel.NewRegistry()
	if err := wireguard.Register(reg); err != nil {
		return err
	}
	t, err := reg.New(wireguard.Name, cfg)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	if err := t.Up(context.Background()); err != nil {
		return enc.Encode(reply{Error: err.Error()})
	}
	defer t.Close()
	if err := enc.Encode(reply{PublicKey: t.PublicKey(), Mode: t.Mode()}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return err
		}
		var r reply
		switch req.Op {
		case "peers":
			if err := t.SetPeers(context.Background(), req.Peers); err != nil {
				r.Error = err.Error()
			}
		case "status":
			st, err := t.Status(context.Background())
			r.Status = st
			if err != nil {
				r.Error = err.Error()
			}
		case "up":
			if err := t.Up(context.Background()); err != nil {
				r.Error = err.Error()
			}
		default:
			r.Error = "unknown op " + req.Op
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// end is one tunnel end: a namespace on the underlay and a helper process in it.
type end struct {
	t       testing.TB
	ns      *netnstest.Netns
	ip      netip.Addr
	iface   string
	port    int
	address netip.Prefix
	key     string
	mode    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies *json.Decoder
}

func newEnd(t testing.TB, sw *netnstest.Switch, name, ip string, port int, address string) *end {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	e := &end{t: t, ns: netnstest.New(t, name), ip: netip.MustParseAddr(ip), port: port,
		iface: "wgt" + hex.EncodeToString(b), address: netip.MustParsePrefix(address)}
	sw.Plug(t, e.ns, "p"+name, ip+"/24")
	cfg, _ := json.Marshal(tunnel.Config{Interface: e.iface, ListenPort: port, Address: e.address, StateDir: t.TempDir()})
	e.cmd = exec.Command("nsenter", "--net="+e.ns.Path(), "--", os.Args[0], "-test.run=^$")
	e.cmd.Env = append(os.Environ(), helperEnv+"="+string(cfg))
	e.cmd.Stderr = os.Stderr
	var err error
	if e.stdin, err = e.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := e.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stop)
	e.replies = json.NewDecoder(stdout)
	var r reply
	if err := e.replies.Decode(&r); err != nil || r.Error != "" {
		t.Fatalf("%s: tunnel up: %v %s", name, err, r.Error)
	}
	e.key, e.mode = r.PublicKey, r.Mode
	return e
}

func (e *end) stop() {
	if e.cmd == nil {
		return
	}
	_ = e.stdin.Close()
	done := make(chan struct{})
	go func() { _ = e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.cmd.Process.Kill()
		<-done
	}
	e.cmd = nil
}

func (e *end) do(req request) reply {
	e.t.Helper()
	data, _ := json.Marshal(req)
	if _, err := e.stdin.Write(append(data, '\n')); err != nil {
		e.t.Fatal(err)
	}
	var r reply
	if err := e.replies.Decode(&r); err != nil {
		e.t.Fatalf("%s: %v", req.Op, err)
	}
	return r
}

func (e *end) setPeers(peers ...tunnel.Peer) {
	e.t.Helper()
	if r := e.do(request{Op: "peers", Peers: peers}); r.Error != "" {
		e.t.Fatal(r.Error)
	}
}

func (e *end) peer(prefixes ...string) tunnel.Peer {
	p := tunnel.Peer{Name: e.iface, PublicKey: e.key, Endpoint: netip.AddrPortFrom(e.ip, uint16(e.port))}
	for _, s := range prefixes {
		p.Prefixes = append(p.Prefixes, netip.MustParsePrefix(s))
	}
	return p
}

func (e *end) routes() string {
	out, _ := e.ns.Run("ip", "route", "show", "dev", e.iface)
	return strings.TrimSpace(out)
}

func TestTunnelCarriesTrafficBothWays(t *testing.T) {
	netnstest.RequireRoot(t)
	sw := netnstest.NewSwitch(t)
	a := newEnd(t, sw, "wga", "172.29.8.11", 51820, "10.200.1.1/32")
	b := newEnd(t, sw, "wgb", "172.29.8.12", 51820, "10.200.2.1/32")
	t.Logf("tunnel mode: %s", a.mode)
	a.setPeers(b.peer("10.200.2.0/24", "10.201.2.0/24"))
	b.setPeers(a.peer("10.200.1.0/24"))

	if err := a.ns.Ping("10.200.2.1", 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		server, client *netnstest.Netns
		addr           string
	}{{b.ns, a.ns, "10.200.2.1:5400"}, {a.ns, b.ns, "10.200.1.1:5400"}} {
		if err := netnstest.TransferTCP(c.server, c.client, c.addr, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	if r := a.do(request{Op: "status"}); r.Error != "" || len(r.Status) != 1 || r.Status[0].LastHandshake.IsZero() ||
		r.Status[0].TxBytes < 8<<20 || r.Status[0].PublicKey != b.key || r.Status[0].Endpoint != netip.MustParseAddrPort("172.29.8.12:51820") {
		t.Errorf("status of a: %+v (error %q), want one peer (b) with a handshake and at least 8 MiB sent", r.Status, r.Error)
	}
	if got := a.routes(); !strings.Contains(got, "10.200.2.0/24") || !strings.Contains(got, "10.201.2.0/24") {
		t.Errorf("routes into the tunnel on a: %q", got)
	}

	t.Run("Up again changes nothing", func(t *testing.T) {
		if r := a.do(request{Op: "up"}); r.Error != "" {
			t.Fatal(r.Error)
		}
		if err := a.ns.Ping("10.200.2.1", 1); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("SetPeers removes routes no peer has any more", func(t *testing.T) {
		a.setPeers(b.peer("10.200.2.0/24"))
		if got := a.routes(); strings.Contains(got, "10.201.2.0/24") || !strings.Contains(got, "10.200.2.0/24") {
			t.Errorf("routes into the tunnel on a: %q", got)
		}
	})

	t.Run("a peer with the wrong key gets nothing through", func(t *testing.T) {
		wrong, _ := wgtypes.GeneratePrivateKey()
		p := a.peer("10.200.1.0/24")
		p.PublicKey = wrong.PublicKey().String()
		b.setPeers(p)
		if err := a.ns.Ping("10.200.2.1", 2); err == nil {
			t.Error("traffic passed with a key the other side does not hold")
		}
		b.setPeers(a.peer("10.200.1.0/24"))
		if err := a.ns.PingUntil("10.200.2.1", 10*time.Second); err != nil {
			t.Fatalf("traffic did not resume with the right key: %v", err)
		}
	})

	t.Run("bad peers are refused with a clear error", func(t *testing.T) {
		p := b.peer("10.200.2.0/24")
		p.PublicKey = "not-a-key"
		if r := a.do(request{Op: "peers", Peers: []tunnel.Peer{p}}); !strings.Contains(r.Error, "public key") {
			t.Errorf("error %q does not mention the public key", r.Error)
		}
		dup := b.peer("10.200.2.0/24")
		if r := a.do(request{Op: "peers", Peers: []tunnel.Peer{dup, {Name: "x", PublicKey: a.key, Prefixes: dup.Prefixes}}}); !strings.Contains(r.Error, "two peers") {
			t.Errorf("error %q does not say a range was given to two peers", r.Error)
		}
	})

	t.Run("closing removes the device", func(t *testing.T) {
		a.stop()
		if out, err := a.ns.Run("ip", "link", "show", a.iface); err == nil {
			t.Errorf("%s still exists after the tunnel closed: %s", a.iface, out)
		}
	})
}

func TestKeyStaysOnTheNode(t *testing.T) {
	dir := t.TempDir()
	first, err := wireguard.New(tunnel.Config{Interface: "wgk0", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	again, err := wireguard.New(tunnel.Config{Interface: "wgk0", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if first.PublicKey() != again.PublicKey() {
		t.Error("the key changed between runs")
	}
	fi, err := os.Stat(filepath.Join(dir, "wgk0.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if err := os.WriteFile(filepath.Join(dir, "wgk1.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := wireguard.New(tunnel.Config{Interface: "wgk1", StateDir: dir}); err == nil || !strings.Contains(err.Error(), "does not hold a key") {
		t.Errorf("a corrupt key file: %v", err)
	}
	if _, err := wireguard.New(tunnel.Config{Interface: "wgk2"}); err == nil {
		t.Error("no state directory was accepted")
	}
}
