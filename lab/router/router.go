// Package router runs a real BGP router — Debian's BIRD 2 or FRR — in a network namespace,
// as the lab's top-of-rack: it accepts sessions from every address of a range (the nodes),
// installs what they announce into its namespace's routing table and says which sessions
// are up. The lab and weft's BGP tests use it.
package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Kinds of router.
var Kinds = []string{"bird", "frr"}

// Config is one router.
type Config struct {
	Kind  string // bird or frr
	Dir   string // configuration, sockets, pid files
	Netns string
	// ASN and RouterID of the router.
	ASN      uint32
	RouterID netip.Addr
	// Neighbors is the range sessions are accepted from, all of them NeighborASN.
	Neighbors   netip.Prefix
	NeighborASN uint32
	// Password is the sessions' TCP MD5 password (empty: none).
	Password string
	// BFD runs BFD on the sessions with this interval (×3); 0: no BFD.
	BFD time.Duration
	// Announce are prefixes the router announces to the nodes (its own segments: the
	// external host's).
	Announce []netip.Prefix
	// Originate are IPv4 prefixes the router announces without a route of its own (BIRD: a
	// static blackhole, kept out of its kernel table; FRR: a network without the import
	// check): what a misconfigured or hostile router may send.
	Originate []netip.Prefix
	// Peers, when set, are FRR's neighbours one by one instead of the range: FRR's BFD
	// for a range's dynamic neighbours comes up only after their BGP session and
	// restarts it on the way, which GoBGP takes for a failure, so BFD needs them.
	Peers []netip.Addr
}

// Process is a command to run in the router's namespace.
type Process struct {
	Name string
	Path string
	Args []string
}

// Validate says what is missing to run the router.
func (c Config) Validate() error {
	switch c.Kind {
	case "bird":
		for _, t := range []string{"/usr/sbin/bird", "/usr/sbin/birdc"} {
			if _, err := os.Stat(t); err != nil {
				return fmt.Errorf("missing %s (apt-get install bird2; hack/lab-deps.sh installs it)", t)
			}
		}
	case "frr":
		for _, t := range []string{"/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "/usr/lib/frr/bfdd", "/usr/bin/vtysh"} {
			if _, err := os.Stat(t); err != nil {
				return fmt.Errorf("missing %s (apt-get install frr; hack/lab-deps.sh installs it)", t)
			}
		}
	default:
		return fmt.Errorf("router %q: the lab knows %s", c.Kind, strings.Join(Kinds, ", "))
	}
	return nil
}

// Write writes the router's configuration into Dir and returns the processes to start (in
// Netns, in order).
func (c Config) Write() ([]Process, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	switch c.Kind {
	case "bird":
		if err := os.WriteFile(filepath.Join(c.Dir, "bird.conf"), []byte(c.birdConf()), 0o644); err != nil {
			return nil, err
		}
		return []Process{{Name: "bird", Path: "/usr/sbin/bird", Args: []string{"-f", "-c", filepath.Join(c.Dir, "bird.conf"),
			"-s", c.birdSocket(), "-P", filepath.Join(c.Dir, "bird.pid")}}}, nil
	default:
		// FRR's daemons drop privileges to the frr user: their directory must be its, and
		// the directories above it passable.
		for d := filepath.Dir(c.Dir); d != "/" && d != "."; d = filepath.Dir(d) {
			if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
				_ = os.Chmod(d, st.Mode().Perm()|0o001)
			}
		}
		if err := exec.Command("chown", "frr:frr", c.Dir).Run(); err != nil {
			return nil, fmt.Errorf("chown frr %s: %w", c.Dir, err)
		}
		files := map[string]string{"zebra.conf": c.frrHeader(), "bgpd.conf": c.frrHeader() + c.bgpdConf(), "bfdd.conf": c.frrHeader() + c.bfddConf()}
		for name, text := range files {
			p := filepath.Join(c.Dir, name)
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				return nil, err
			}
			_ = exec.Command("chown", "frr:frr", p).Run()
		}
		common := func(d string) []string {
			return []string{"-f", filepath.Join(c.Dir, d+".conf"), "-i", filepath.Join(c.Dir, d+".pid"),
				"-z", filepath.Join(c.Dir, "zserv.api"), "--vty_socket", c.Dir, "-u", "frr", "-g", "frr"}
		}
		procs := []Process{{Name: "zebra", Path: "/usr/lib/frr/zebra", Args: common("zebra")}}
		if c.BFD > 0 {
			procs = append(procs, Process{Name: "bfdd", Path: "/usr/lib/frr/bfdd", Args: common("bfdd")})
		}
		// bgpd's own listener would take port 179 on every address: fine in a namespace.
		procs = append(procs, Process{Name: "bgpd", Path: "/usr/lib/frr/bgpd", Args: common("bgpd")})
		return procs, nil
	}
}

func (c Config) birdSocket() string { return filepath.Join(c.Dir, "bird.ctl") }

func (c Config) birdConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog \"%s\" all;\n", c.RouterID, filepath.Join(c.Dir, "bird.log"))
	b.WriteString("protocol device {}\nprotocol direct { ipv4; ipv6; }\n")
	// What the nodes announce goes into the namespace's kernel table (ECMP where several
	// nodes announce one prefix).
	b.WriteString("protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; merge paths on; }\n")
	b.WriteString("protocol kernel { ipv6 { import none; export where source = RTS_BGP; }; merge paths on; }\n")
	if c.BFD > 0 {
		ms := c.BFD.Milliseconds()
		fmt.Fprintf(&b, "protocol bfd { interface \"*\" { min rx interval %d ms; min tx interval %d ms; multiplier 3; }; }\n", ms, ms)
	}
	if len(c.Originate) > 0 {
		b.WriteString("protocol static originated {\n  ipv4;\n")
		for _, p := range c.Originate {
			fmt.Fprintf(&b, "  route %s blackhole;\n", p)
		}
		b.WriteString("}\n")
	}
	fmt.Fprintf(&b, "protocol bgp node {\n  local as %d;\n  neighbor range %s as %d;\n  dynamic name \"node\";\n", c.ASN, c.Neighbors, c.NeighborASN)
	// eBGP in BIRD 2 needs explicit filters: the nodes' routes in, the router's own
	// segments out.
	export := "none"
	var exports []string
	if len(c.Announce) > 0 {
		var nets []string
		for _, p := range c.Announce {
			nets = append(nets, p.String())
		}
		exports = append(exports, fmt.Sprintf("(source = RTS_DEVICE && net ~ [ %s ])", strings.Join(nets, ", ")))
	}
	if len(c.Originate) > 0 {
		var nets []string
		for _, p := range c.Originate {
			nets = append(nets, p.String())
		}
		exports = append(exports, fmt.Sprintf("(source = RTS_STATIC && net ~ [ %s ])", strings.Join(nets, ", ")))
	}
	if len(exports) > 0 {
		export = "where " + strings.Join(exports, " || ")
	}
	fmt.Fprintf(&b, "  ipv4 { import all; export %s; };\n  ipv6 { import all; export %s; };\n  graceful restart on;\n", export, export)
	// After a failed session BIRD waits a minute (by default) before it takes the
	// neighbour's next one: a lab's router forgives sooner.
	b.WriteString("  error wait time 1, 5;\n  error forget time 10;\n")
	if c.Password != "" {
		fmt.Fprintf(&b, "  password %q;\n", c.Password)
	}
	if c.BFD > 0 {
		b.WriteString("  bfd on;\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func (c Config) frrHeader() string {
	return fmt.Sprintf("frr defaults traditional\nhostname router\nlog file %s\n!\n", filepath.Join(c.Dir, "frr.log"))
}

func (c Config) bgpdConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n bgp graceful-restart\n", c.ASN, c.RouterID)
	if len(c.Originate) > 0 {
		b.WriteString(" no bgp network import-check\n")
	}
	fmt.Fprintf(&b, " neighbor nodes peer-group\n neighbor nodes remote-as %d\n", c.NeighborASN)
	if c.Password != "" {
		fmt.Fprintf(&b, " neighbor nodes password %s\n", c.Password)
	}
	if c.BFD > 0 {
		b.WriteString(" neighbor nodes bfd profile lab\n")
	}
	if len(c.Peers) > 0 {
		// The nodes dial: no connection collisions.
		b.WriteString(" neighbor nodes passive\n")
		for _, p := range c.Peers {
			fmt.Fprintf(&b, " neighbor %s peer-group nodes\n", p)
		}
	} else {
		fmt.Fprintf(&b, " bgp listen range %s peer-group nodes\n", c.Neighbors)
	}
	b.WriteString(" address-family ipv4 unicast\n  neighbor nodes activate\n")
	for _, p := range append(slices.Clone(c.Announce), c.Originate...) {
		if p.Addr().Is4() {
			fmt.Fprintf(&b, "  network %s\n", p)
		}
	}
	b.WriteString(" exit-address-family\n")
	b.WriteString(" address-family ipv6 unicast\n  neighbor nodes activate\n exit-address-family\n!\n")
	return b.String()
}

func (c Config) bfddConf() string {
	if c.BFD <= 0 {
		return ""
	}
	ms := c.BFD.Milliseconds()
	return fmt.Sprintf("bfd\n profile lab\n  receive-interval %d\n  transmit-interval %d\n  detect-multiplier 3\n !\n!\n", ms, ms)
}

// Start writes the configuration and runs the router's processes in its namespace (through
// nsenter), their output in Dir; stop ends them. For tests — the lab supervises its own.
func (c Config) Start(ctx context.Context) (stop func(), err error) {
	procs, err := c.Write()
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stop = func() {
		for i := len(cmds) - 1; i >= 0; i-- {
			cmd := cmds[i]
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
	}
	for _, p := range procs {
		cmd := exec.Command("nsenter", append([]string{"--net=" + filepath.Join("/run/netns", c.Netns), "--", p.Path}, p.Args...)...)
		out, err := os.Create(filepath.Join(c.Dir, p.Name+".out"))
		if err != nil {
			stop()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = out, out
		err = cmd.Start()
		out.Close()
		if err != nil {
			stop()
			return nil, fmt.Errorf("starting %s: %w", p.Name, err)
		}
		cmds = append(cmds, cmd)
		if p.Name == "zebra" || p.Name == "bfdd" {
			time.Sleep(300 * time.Millisecond) // bgpd connects to zebra on start
		}
	}
	if err := c.WaitReady(ctx, 10*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("%w; its output: %s", err, c.Logs(3000))
	}
	return stop, nil
}

// Logs is the end of each of the router's output and log files, for failure messages.
func (c Config) Logs(max int) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(c.Dir, "*.out"))
	more, _ := filepath.Glob(filepath.Join(c.Dir, "*.log"))
	for _, f := range append(files, more...) {
		data, _ := os.ReadFile(f)
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", f, data)
	}
	return b.String()
}

// Session is one BGP session as the router reports it.
type Session struct {
	Peer        netip.Addr
	Established bool
	State       string
}

// Sessions asks the router for its sessions.
func (c Config) Sessions(ctx context.Context) ([]Session, error) {
	switch c.Kind {
	case "bird":
		out, err := c.birdc(ctx, "show protocols all")
		if err != nil {
			return nil, err
		}
		return parseBird(out), nil
	default:
		out, err := c.vtysh(ctx, "show bgp summary json")
		if err != nil {
			return nil, err
		}
		return parseFRRSummary(out)
	}
}

// CLI runs a command in the router's own command line (birdc for BIRD, vtysh for FRR).
func (c Config) CLI(ctx context.Context, cmd string) (string, error) {
	if c.Kind == "bird" {
		return c.birdc(ctx, cmd)
	}
	return c.vtysh(ctx, cmd)
}

func (c Config) birdc(ctx context.Context, cmd string) (string, error) {
	out, err := exec.CommandContext(ctx, "/usr/sbin/birdc", "-s", c.birdSocket(), cmd).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("birdc %s: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

func (c Config) vtysh(ctx context.Context, cmd string) (string, error) {
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", c.Dir, "-c", cmd).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("vtysh -c %q: %w: %s", cmd, err, out)
	}
	return string(out), nil
}

var (
	birdProto    = regexp.MustCompile(`(?m)^(\S+)\s+BGP\s+\S+\s+(\S+)\s+\S+\s*(.*)$`)
	birdNeighbor = regexp.MustCompile(`(?m)^\s+Neighbor address:\s+(\S+)`)
)

// parseBird reads `birdc show protocols all`: each dynamic session's protocol block with its
// state and neighbour address.
func parseBird(out string) []Session {
	var sessions []Session
	blocks := regexp.MustCompile(`(?m)^\S`).FindAllStringIndex(out, -1)
	for i, b := range blocks {
		end := len(out)
		if i+1 < len(blocks) {
			end = blocks[i+1][0]
		}
		block := out[b[0]:end]
		m := birdProto.FindStringSubmatch(block)
		n := birdNeighbor.FindStringSubmatch(block)
		if m == nil || n == nil {
			continue
		}
		addr, err := netip.ParseAddr(n[1])
		if err != nil {
			continue
		}
		st := strings.TrimSpace(m[3])
		sessions = append(sessions, Session{Peer: addr, Established: st == "Established", State: st})
	}
	return sessions
}

func parseFRRSummary(out string) ([]Session, error) {
	var sum map[string]struct {
		Peers map[string]struct {
			State string `json:"state"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		return nil, fmt.Errorf("show bgp summary json: %w: %s", err, out)
	}
	seen := map[netip.Addr]bool{}
	var sessions []Session
	for _, af := range sum {
		for a, p := range af.Peers {
			addr, err := netip.ParseAddr(a)
			if err != nil || seen[addr] {
				continue
			}
			seen[addr] = true
			sessions = append(sessions, Session{Peer: addr, Established: p.State == "Established", State: p.State})
		}
	}
	return sessions, nil
}

// Route is a route in the router's namespace table.
type Route struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// Routes lists the routes the router installed into its namespace's table (protocol bird or
// bgp), so what the router learned is what it forwards by.
func (c Config) Routes(ctx context.Context) ([]Route, error) {
	proto := "bird"
	if c.Kind == "frr" {
		proto = "bgp"
	}
	var out []Route
	for _, family := range []string{"-4", "-6"} {
		b, err := exec.CommandContext(ctx, "ip", family, "-n", c.Netns, "-j", "route", "show", "proto", proto).Output()
		if err != nil {
			return nil, fmt.Errorf("ip -n %s route show proto %s: %w", c.Netns, proto, err)
		}
		var routes []struct {
			Dst      string `json:"dst"`
			Gateway  string `json:"gateway"`
			Nexthops []struct {
				Gateway string `json:"gateway"`
			} `json:"nexthops"`
		}
		if len(strings.TrimSpace(string(b))) > 0 {
			if err := json.Unmarshal(b, &routes); err != nil {
				return nil, err
			}
		}
		for _, r := range routes {
			p, err := parsePrefix(r.Dst)
			if err != nil {
				continue
			}
			rt := Route{Prefix: p}
			if gw, err := netip.ParseAddr(r.Gateway); err == nil {
				rt.NextHops = append(rt.NextHops, gw)
			}
			for _, h := range r.Nexthops {
				if gw, err := netip.ParseAddr(h.Gateway); err == nil {
					rt.NextHops = append(rt.NextHops, gw)
				}
			}
			out = append(out, rt)
		}
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

// WaitRoute waits until the router's table has prefix through exactly nextHops (in any
// order); nil nextHops waits until the prefix is gone.
func (c Config) WaitRoute(ctx context.Context, prefix netip.Prefix, nextHops []netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last []Route
	for {
		routes, err := c.Routes(ctx)
		if err == nil {
			last = routes
			if HasRoute(routes, prefix, nextHops) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %s router has no route %s via %v after %v; its routes: %v", c.Kind, prefix, nextHops, limit, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// HasRoute says whether routes has prefix through exactly nextHops; with nil nextHops,
// whether prefix is absent.
func HasRoute(routes []Route, prefix netip.Prefix, nextHops []netip.Addr) bool {
	for _, r := range routes {
		if r.Prefix != prefix {
			continue
		}
		if nextHops == nil || len(r.NextHops) != len(nextHops) {
			return false
		}
		want := map[netip.Addr]bool{}
		for _, h := range nextHops {
			want[h] = true
		}
		for _, h := range r.NextHops {
			if !want[h] {
				return false
			}
		}
		return true
	}
	return nextHops == nil
}

// WatchRoute reads the router's table every interval until stop is called, which says when
// prefix was first not routed through exactly nextHops (with the table then; "" if never)
// and how many times the table was read.
func (c Config) WatchRoute(ctx context.Context, prefix netip.Prefix, nextHops []netip.Addr, every time.Duration) (stop func() (lost string, polls int)) {
	quit, done := make(chan struct{}), make(chan struct{})
	n, missing := 0, ""
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(every):
			}
			routes, err := c.Routes(ctx)
			n++
			if err == nil && !HasRoute(routes, prefix, nextHops) {
				missing = fmt.Sprintf("%v: %v", time.Now().Format(time.StampMilli), routes)
				return
			}
		}
	}()
	return func() (string, int) {
		close(quit)
		<-done
		return missing, n
	}
}

// WaitEstablished waits until the router has an Established session with every peer.
func (c Config) WaitEstablished(ctx context.Context, peers []netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last []Session
	var lastErr error
	for {
		s, err := c.Sessions(ctx)
		last, lastErr = s, err
		if err == nil {
			up := map[netip.Addr]bool{}
			for _, x := range s {
				up[x.Peer] = x.Established
			}
			all := true
			for _, p := range peers {
				all = all && up[p]
			}
			if all {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %s router's sessions after %v: %+v (%w); want Established with %v", c.Kind, limit, last, lastErr, peers)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ErrNotRunning is returned when the router's control socket does not answer.
var ErrNotRunning = errors.New("the router does not answer")

// WaitReady waits until the router answers on its control socket.
func (c Config) WaitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		_, err := c.Sessions(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %v: %w", ErrNotRunning, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
