// Package bgp is the node's BGP speaker: an embedded GoBGP v4 server configured from a
// Config (what the ClusterNetwork's spec.bgp says for this node), reconciled in place —
// peers and announced prefixes are added and removed as the Config changes, the server is
// restarted only when its identity (ASN, router ID, listen port) changes.
//
// When the agent stops, the speaker is not shut down politely: its TCP sessions just close,
// so peers that negotiated graceful restart keep the node's routes until the next agent
// takes over (which says it is restarting). A node that leaves withdraws its routes
// explicitly (Withdraw).
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Config is what one node's speaker runs with.
type Config struct {
	ASN        uint32
	RouterID   netip.Addr
	ListenPort int32
	// GracefulRestart advertises the capability with RestartTime; Restarting says this
	// speaker takes over from an earlier one on the node (the restart flag).
	GracefulRestart bool
	RestartTime     uint32
	Restarting      bool
	Peers           []Peer
	// Prefixes announced, with NextHop (the node) and Communities on every one.
	Prefixes    []netip.Prefix
	NextHop     netip.Addr
	Communities []string
}

// Peer is one neighbour.
type Peer struct {
	Name     string
	Address  netip.Addr
	ASN      uint32
	Port     uint16
	Passive  bool
	Password string
	// HoldTime and Keepalive in seconds (0: GoBGP's defaults, 90 and 30).
	HoldTime, Keepalive uint64
	BFD                 *BFD
	// Error is a configuration problem (a missing password Secret): the peer is not
	// configured and its status says why.
	Error string
	// MaxPrefixes bounds the routes imported from it (ImportFilter; 0: the default).
	MaxPrefixes int
}

// BFD timers.
type BFD struct {
	Interval   time.Duration
	Multiplier uint32
}

// PeerStatus is one session as the speaker sees it.
type PeerStatus struct {
	Name             string
	Address          netip.Addr
	ASN              uint32
	State            string // Idle, Connect, Active, OpenSent, OpenConfirm, Established
	Since            time.Time
	BFD              string // Up, Down, Init, AdminDown; empty without BFD
	PrefixesSent     uint64
	PrefixesReceived uint64
	LastError        string
	// ImportRefused says which of its routes the node does not import (ImportFilter).
	ImportRefused string
}

// Route is a route a peer announced (best path per prefix).
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Peer    netip.Addr
}

// Speaker is the node's BGP speaker.
type Speaker struct {
	log *slog.Logger

	mu       sync.Mutex
	srv      *server.BgpServer
	identity string // ASN/router ID/port the server runs with
	peers    map[netip.Addr]Peer
	paths    map[string]uuid.UUID // announced prefix+attributes → GoBGP's path ID
	cfg      Config
	// lastErr keeps, per peer, the last reason its session went down (under errMu: GoBGP
	// reports while Apply holds mu).
	errMu   sync.Mutex
	lastErr map[netip.Addr]string
	// bfdRenewed is when each peer's BFD session was last made anew (under mu).
	bfdRenewed map[netip.Addr]time.Time
	cancel     context.CancelFunc
}

// New returns a speaker that starts on the first Apply.
func New(log *slog.Logger) *Speaker {
	if log == nil {
		log = slog.Default()
	}
	return &Speaker{log: log, lastErr: map[netip.Addr]string{}, bfdRenewed: map[netip.Addr]time.Time{}}
}

// Apply makes the speaker run cfg: the server (re)started if its identity changed, peers
// added, replaced (changed settings) and removed, prefixes announced and withdrawn.
func (s *Speaker) Apply(ctx context.Context, cfg Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !cfg.RouterID.Is4() {
		return fmt.Errorf("router ID %v: want an IPv4 address", cfg.RouterID)
	}
	if cfg.ASN == 0 {
		return errors.New("no ASN")
	}
	id := fmt.Sprintf("%d/%s/%d/%v/%d", cfg.ASN, cfg.RouterID, cfg.ListenPort, cfg.GracefulRestart, cfg.RestartTime)
	if s.srv == nil || s.identity != id {
		if s.srv != nil {
			s.stopLocked(true)
		}
		if err := s.start(ctx, cfg); err != nil {
			return err
		}
		s.identity = id
	}
	s.cfg = cfg
	var errs []error
	if err := s.syncPeers(ctx, cfg); err != nil {
		errs = append(errs, err)
	}
	if err := s.syncPaths(cfg); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Speaker) start(ctx context.Context, cfg Config) error {
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelInfo) // notifications are logged at Info: notificationLog reads them
	srv := server.NewBgpServer(server.LoggerOption(slog.New(&notificationLog{next: s.log.Handler(), s: s}), lvl))
	go srv.Serve()
	global := &api.Global{Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: cfg.ListenPort}
	if cfg.GracefulRestart {
		global.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: cfg.RestartTime}
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		srv.Stop()
		return fmt.Errorf("starting the BGP speaker (AS %d, router ID %s, port %d): %w", cfg.ASN, cfg.RouterID, cfg.ListenPort, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	if err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.onPeer}, server.WatchPeer()); err != nil {
		cancel()
		srv.Stop()
		return err
	}
	s.srv, s.cancel = srv, cancel
	s.peers, s.paths = map[netip.Addr]Peer{}, map[string]uuid.UUID{}
	return nil
}

// onPeer remembers why sessions go down.
func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	p := ev.Peer
	if p.State.SessionState == bgp.BGP_FSM_ESTABLISHED {
		return
	}
	if p.State.SessionState == bgp.BGP_FSM_IDLE {
		go s.renewBFD(p.State.NeighborAddress)
	}
	why, ok := disconnectReasons[p.State.DisconnectReason]
	if !ok {
		return // timers and deconfiguration say nothing about the peer
	}
	if p.State.DisconnectMessage != "" {
		why += ": " + p.State.DisconnectMessage
	}
	s.setErr(p.State.NeighborAddress, why)
}

// renewBFD makes a new BFD session with a peer whose BGP session went down. GoBGP's BFD
// keeps the peer's old discriminator after a failure and discards the packets of the session
// the peer starts anew (BIRD does), expires, resets BGP, and so on forever: a speaker that
// was frozen for a moment never came back (found by the lab). A fresh BFD session starts
// from Down with no discriminator. At most once a second per peer.
func (s *Speaker) renewBFD(addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[addr]
	if !ok || p.BFD == nil || s.srv == nil || time.Since(s.bfdRenewed[addr]) < time.Second {
		return
	}
	s.bfdRenewed[addr] = time.Now()
	off := p
	off.BFD = nil
	ctx := context.Background()
	if _, err := s.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: apiPeer(off, s.cfg)}); err != nil {
		s.log.Warn("renewing the BFD session", "peer", addr, "err", err)
		return
	}
	if _, err := s.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: apiPeer(p, s.cfg)}); err != nil {
		s.log.Warn("renewing the BFD session", "peer", addr, "err", err)
	}
}

// disconnectReasons are the reasons for a session going down worth telling the user.
var disconnectReasons = map[api.PeerState_DisconnectReason]string{
	api.PeerState_DISCONNECT_REASON_BAD_PEER_AS:           "the peer's OPEN carries another AS number than configured (bad peer AS)",
	api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED:    "hold timer expired: the peer went silent",
	api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED: "the peer closed the session",
	api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT:     "the session was closed by this speaker",
	api.PeerState_DISCONNECT_REASON_READ_FAILED:           "the connection broke",
	api.PeerState_DISCONNECT_REASON_WRITE_FAILED:          "the connection broke",
	api.PeerState_DISCONNECT_REASON_INVALID_MSG:           "the peer sent an invalid message",
	api.PeerState_DISCONNECT_REASON_HARD_RESET:            "the session was reset (BFD down)",
}

func (s *Speaker) syncPeers(ctx context.Context, cfg Config) error {
	want := map[netip.Addr]Peer{}
	for _, p := range cfg.Peers {
		if p.Error == "" {
			want[p.Address] = p
		}
	}
	var errs []error
	for addr, have := range s.peers {
		w, ok := want[addr]
		if ok && reflect.DeepEqual(w, have) {
			continue
		}
		if ok && w.Password == have.Password && w.Port == have.Port && w.Passive == have.Passive {
			// BFD, timers, the AS number: GoBGP changes them in place and resets the
			// session only when the OPEN must change (a new AS) — a BFD or timer change
			// leaves the routes where they are.
			if _, err := s.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: apiPeer(w, cfg)}); err != nil {
				errs = append(errs, fmt.Errorf("updating peer %s (%s): %w", w.Name, addr, err))
				continue
			}
			s.peers[addr] = w
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("removing peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.errMu.Lock()
		delete(s.lastErr, addr)
		s.errMu.Unlock()
	}
	for addr, p := range want {
		if _, ok := s.peers[addr]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p, cfg)}); err != nil {
			errs = append(errs, fmt.Errorf("adding peer %s (%s): %w", p.Name, addr, err))
			continue
		}
		s.peers[addr] = p
	}
	return errors.Join(errs...)
}

func apiPeer(p Peer, cfg Config) *api.Peer {
	families := []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC}
	out := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password, Description: p.Name},
		Transport: &api.Transport{PassiveMode: p.Passive, RemotePort: uint32(p.Port)},
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: p.HoldTime, KeepaliveInterval: p.Keepalive,
			ConnectRetry: 5, IdleHoldTimeAfterReset: 1}},
	}
	if cfg.GracefulRestart {
		out.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: cfg.RestartTime, LocalRestarting: cfg.Restarting}
	}
	for _, f := range families {
		afi := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_Afi(f.Afi()), Safi: api.Family_Safi(f.Safi())}, Enabled: true}}
		if cfg.GracefulRestart {
			afi.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		out.AfiSafis = append(out.AfiSafis, afi)
	}
	if p.BFD != nil {
		us := uint32(p.BFD.Interval / time.Microsecond)
		out.Bfd = &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: us, RequiredMinimumReceive: us, DetectionMultiplier: p.BFD.Multiplier}
	}
	return out
}

// pathKey identifies an announced path with everything it carries.
func pathKey(p netip.Prefix, nh netip.Addr, comms []string) string {
	return p.String() + "|" + nh.String() + "|" + strings.Join(comms, ",")
}

func (s *Speaker) syncPaths(cfg Config) error {
	want := map[string]netip.Prefix{}
	for _, p := range cfg.Prefixes {
		want[pathKey(p.Masked(), cfg.NextHop, cfg.Communities)] = p.Masked()
	}
	var errs []error
	// Announce first, then withdraw: a prefix whose attributes change is replaced, never
	// missing.
	for key, p := range want {
		if _, ok := s.paths[key]; ok {
			continue
		}
		path, err := newPath(p, cfg.NextHop, cfg.Communities)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		if err != nil {
			errs = append(errs, fmt.Errorf("announcing %s: %w", p, err))
			continue
		}
		s.paths[key] = res[0].UUID
	}
	for key, id := range s.paths {
		if _, ok := want[key]; ok {
			continue
		}
		prefix, _, _ := strings.Cut(key, "|")
		if _, replaced := wantPrefix(want, prefix); replaced {
			// Another path of the same prefix is announced: it replaced this one (an
			// implicit withdrawal); deleting this one would withdraw the prefix.
			delete(s.paths, key)
			continue
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{id}}); err != nil {
			errs = append(errs, fmt.Errorf("withdrawing %s: %w", prefix, err))
			continue
		}
		delete(s.paths, key)
	}
	return errors.Join(errs...)
}

func wantPrefix(want map[string]netip.Prefix, prefix string) (netip.Prefix, bool) {
	for _, p := range want {
		if p.String() == prefix {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func newPath(p netip.Prefix, nh netip.Addr, comms []string) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, fmt.Errorf("prefix %s: %w", p, err)
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0)}
	family := bgp.RF_IPv4_UC
	if p.Addr().Is4() {
		a, err := bgp.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	} else {
		family = bgp.RF_IPv6_UC
		a, err := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	var std []uint32
	var large []*bgp.LargeCommunity
	for _, c := range comms {
		parts := strings.Split(c, ":")
		switch len(parts) {
		case 2:
			hi, err1 := strconv.ParseUint(parts[0], 10, 16)
			lo, err2 := strconv.ParseUint(parts[1], 10, 16)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("community %q: want ASN:value, each 0–65535", c)
			}
			std = append(std, uint32(hi)<<16|uint32(lo))
		case 3:
			l, err := bgp.ParseLargeCommunity(c)
			if err != nil {
				return nil, fmt.Errorf("large community %q: %w", c, err)
			}
			large = append(large, l)
		default:
			return nil, fmt.Errorf("community %q: want ASN:value or ASN:value:value", c)
		}
	}
	if len(std) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(std))
	}
	if len(large) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(large))
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs}, nil
}

// Status reports every configured peer's session (peers with a configuration error too).
func (s *Speaker) Status(ctx context.Context) ([]PeerStatus, error) {
	s.mu.Lock()
	srv, cfg := s.srv, s.cfg
	s.mu.Unlock()
	lastErr := map[netip.Addr]string{}
	s.errMu.Lock()
	for k, v := range s.lastErr {
		lastErr[k] = v
	}
	s.errMu.Unlock()
	byAddr := map[netip.Addr]*api.Peer{}
	if srv != nil {
		err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
				byAddr[a] = p
			}
		})
		if err != nil {
			return nil, err
		}
	}
	var out []PeerStatus
	for _, p := range cfg.Peers {
		st := PeerStatus{Name: p.Name, Address: p.Address, ASN: p.ASN, State: "Idle", LastError: p.Error}
		if ap, ok := byAddr[p.Address]; ok && p.Error == "" {
			st.State = sessionState(ap.GetState().GetSessionState())
			if t := ap.GetTimers().GetState(); t != nil {
				if st.State == "Established" && t.GetUptime() != nil {
					st.Since = t.GetUptime().AsTime()
				} else if t.GetDowntime() != nil && t.GetDowntime().GetSeconds() > 0 {
					st.Since = t.GetDowntime().AsTime()
				}
			}
			if b := ap.GetState().GetBfdState(); b != nil && p.BFD != nil {
				st.BFD = bfdState(b.GetSessionState())
			}
			for _, af := range ap.GetAfiSafis() {
				st.PrefixesSent += af.GetState().GetAdvertised()
				st.PrefixesReceived += af.GetState().GetAccepted()
			}
			if st.State != "Established" {
				st.LastError = lastErr[p.Address]
				if why, ok := disconnectReasons[ap.GetState().GetDisconnectReason()]; ok && st.LastError == "" {
					st.LastError = why
				}
				if st.LastError == "" && p.Passive {
					st.LastError = "waiting for the peer to connect (passive)"
				} else if st.LastError == "" {
					st.LastError = fmt.Sprintf("no session with %s port %d: unreachable, not listening, refusing this node, or a TCP MD5 password mismatch",
						p.Address, max(p.Port, 179))
				}
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	return out, nil
}

func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "Idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "Connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "Active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "OpenSent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}

func bfdState(s api.BfdSessionState) string {
	switch s {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "Up"
	case api.BfdSessionState_BFD_SESSION_STATE_DOWN:
		return "Down"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "AdminDown"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "Init"
	}
	return ""
}

// Received lists the best routes peers announced.
func (s *Speaker) Received() ([]Route, error) {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil, nil
	}
	var out []Route
	for _, f := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f}, func(prefix bgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if !p.Best || !p.PeerAddress.IsValid() || p.PeerAddress.IsUnspecified() {
					continue
				}
				pfx, err := netip.ParsePrefix(prefix.String())
				if err != nil {
					continue
				}
				out = append(out, Route{Prefix: pfx, NextHop: nextHop(p), Peer: p.PeerAddress})
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}

// Withdraw withdraws every announced prefix (the node leaves; peers should not wait for a
// restart that won't come).
func (s *Speaker) Withdraw() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil || len(s.paths) == 0 {
		return nil
	}
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
		return err
	}
	s.paths = map[string]uuid.UUID{}
	s.cfg.Prefixes = nil
	return nil
}

// Stop ends the speaker. graceful: say goodbye to peers (Cease), which drop the routes at
// once; otherwise the sessions just close and peers with graceful restart keep the routes
// for the restart time.
func (s *Speaker) Stop(graceful bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(graceful)
}

func (s *Speaker) stopLocked(graceful bool) {
	if s.srv == nil {
		return
	}
	s.cancel()
	if graceful {
		_ = s.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
	} else {
		_ = s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true})
	}
	s.srv.Stop()
	s.srv, s.peers, s.paths = nil, nil, nil
}
