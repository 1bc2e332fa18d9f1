package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/weft-net/weft/agent/datapath"
	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
	"github.com/weft-net/weft/internal/statefile"
)

// lastKnownRoutes is what the agent keeps on its node (StateDir/agent-last-known.json, mode
// 0600) to fail over between this cluster's gateways while it cannot read its API server:
// an agent restarted during an API server outage (stopped, restarting, partitioned) starts
// no subsystem before its first lists, so without it the node kept forwarding as its
// datapath was left but stayed on a gateway that died. It is written only when it changes.
type lastKnownRoutes struct {
	Backend fabricv1.DatapathBackend `json:"backend"`
	Node    datapath.Node            `json:"node"`
	// MaxActive is the ClusterNetwork's spec.gateways.maxActive.
	MaxActive int `json:"maxActive,omitempty"`
	// Routes are the peer clusters' ranges and every candidate gateway, before probing.
	Routes datapath.PeerRoutes `json:"routes"`
}

const lastKnownRoutesFile = "agent-last-known.json"

// lastKnownWait is how long a starting agent waits for its API server before it fails over
// from what it last knew (as long as a starting gateway waits): a restart that finds the API
// server answering never uses the file.
const lastKnownWait = 5 * time.Second

// lastKnownStore writes the file when what it holds changes.
type lastKnownStore struct {
	dir   string
	mu    sync.Mutex
	saved *lastKnownRoutes
}

func (s *lastKnownStore) save(k lastKnownRoutes) error {
	if s == nil || s.dir == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saved != nil && reflect.DeepEqual(*s.saved, k) {
		return nil
	}
	if err := statefile.PrivateJSON(filepath.Join(s.dir, lastKnownRoutesFile), k); err != nil {
		return fmt.Errorf("keeping the last known gateways: %w", err)
	}
	s.saved = &k
	return nil
}

// loadLastKnownRoutes reads what an earlier run kept (nil, nil: nothing).
func loadLastKnownRoutes(dir string) (*lastKnownRoutes, error) {
	if dir == "" {
		return nil, nil
	}
	var k lastKnownRoutes
	if found, err := statefile.ReadJSON(filepath.Join(dir, lastKnownRoutesFile), &k); !found || err != nil {
		return nil, err
	}
	return &k, nil
}

// failoverFromLastKnown, when the API server has not answered within lastKnownWait and an
// earlier run left what it knew, opens the node's datapath (Init keeps everything it
// forwards) and moves the routes to peer clusters between the gateways it knew, on their
// health probes alone, as the peer-routes subsystem does. Nothing is programmed until a
// probe round has been answered, and then only what differs from what the prober says: a
// restart changes no forwarding by itself. stop ends it (the subsystems take over) and
// returns once the datapath is closed.
func (a *agentState) failoverFromLastKnown(ctx context.Context, registry *datapath.Registry) (stop func()) {
	k, err := loadLastKnownRoutes(a.cfg.StateDir)
	if err != nil {
		a.log.Error(err, "reading the last known gateways")
	}
	if k == nil || len(k.Routes.Gateways) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			return
		case <-time.After(lastKnownWait):
		}
		if err := a.failoverFrom(ctx, registry, *k); err != nil && ctx.Err() == nil {
			a.log.Error(err, "failing over from the last known gateways")
		}
	}()
	return func() { cancel(); <-done }
}

func (a *agentState) failoverFrom(ctx context.Context, registry *datapath.Registry, k lastKnownRoutes) error {
	a.log.Info("the API server does not answer: failing over between the gateways last known", "gateways", k.Routes.Gateways,
		"prefixes", len(k.Routes.Prefixes))
	a.notReady.Store("the API server does not answer: failing over between the gateways last known")
	dp, err := registry.New(string(k.Backend), a.datapathOptions(nil, nil))
	if err != nil {
		return err
	}
	defer dp.Close()
	if err := dp.Init(ctx, k.Node); err != nil {
		return fmt.Errorf("the datapath: %w", err)
	}
	changed := make(chan struct{}, 1)
	prober, err := a.gatewayProber(changed)
	if err != nil {
		return err
	}
	prober.SetTargets(gatewayTargets(k.Routes.Gateways))
	go func() { _ = prober.Run(ctx) }()
	// A few probe rounds first (50 ms each): a gateway that answers has by then.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(200 * time.Millisecond):
	}
	var programmed *datapath.PeerRoutes
	var retry <-chan time.Time
	for {
		up := prober.Answering()
		want := ActivePeerRoutes(k.Routes, k.Node.IP, k.MaxActive, func(g netip.Addr) bool { return up[g] })
		retry = nil
		if len(want.Gateways) > 0 && (programmed == nil || !reflect.DeepEqual(*programmed, want)) {
			if err := dp.SetPeerRoutes(ctx, want); err != nil {
				a.log.Error(err, "programming routes to peer clusters from the last known gateways")
				retry = time.After(time.Second)
			} else {
				a.log.Info("routes to peer clusters (last known gateways)", "gateways", want.Gateways, "localGateway", want.LocalGateway)
				programmed = &want
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-retry:
		}
	}
}
