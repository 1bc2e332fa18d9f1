package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	fabricv1 "github.com/weft-net/weft/api/v1alpha1"
)

// passwords follows the BGP peers' password Secrets that spec.bgp names, each through a
// watch of that one Secret (the agent may read those Secrets by name and no other; RBAC
// allows a list or watch by name only with a field selector on it). A Secret created,
// changed or deleted wakes the speaker; nothing is read again on a timer. The watches end
// with the context they were started with (the speaker's).
type passwords struct {
	cs      kubernetes.Interface
	ns      string
	changed func()
	mu      sync.Mutex
	watches map[string]*secretWatch // by Secret name
}

type secretWatch struct {
	store  cache.Store
	synced cache.InformerSynced
	stop   context.CancelFunc
}

// passwordSyncWait bounds how long a new watch's first list may hold the speaker's sync;
// a Secret read later wakes it again.
const passwordSyncWait = 5 * time.Second

func newPasswords(cs kubernetes.Interface, ns string, changed func()) *passwords {
	return &passwords{cs: cs, ns: ns, changed: changed, watches: map[string]*secretWatch{}}
}

// follow watches exactly the Secrets spec names (none when nil), waiting briefly for the
// new watches' first lists.
func (p *passwords) follow(ctx context.Context, spec *fabricv1.BGPSpec) {
	var names []string
	if spec != nil {
		for _, peer := range spec.Peers {
			if r := peer.PasswordSecretRef; r != nil && !slices.Contains(names, r.Name) {
				names = append(names, r.Name)
			}
		}
	}
	p.mu.Lock()
	var started []cache.InformerSynced
	for name, w := range p.watches {
		if !slices.Contains(names, name) {
			w.stop()
			delete(p.watches, name)
		}
	}
	for _, name := range names {
		if p.watches[name] == nil {
			w := p.watch(ctx, name)
			p.watches[name] = w
			started = append(started, w.synced)
		}
	}
	p.mu.Unlock()
	if len(started) > 0 {
		wait, cancel := context.WithTimeout(ctx, passwordSyncWait)
		defer cancel()
		cache.WaitForCacheSync(wait.Done(), started...)
	}
}

func (p *passwords) watch(ctx context.Context, name string) *secretWatch {
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}
	lw := cache.NewFilteredListWatchFromClient(p.cs.CoreV1().RESTClient(), "secrets", p.ns, byName)
	changed := p.changed
	store, ctl := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: &corev1.Secret{},
		Handler: cache.ResourceEventHandlerFuncs{AddFunc: func(any) { changed() }, UpdateFunc: func(any, any) { changed() },
			DeleteFunc: func(any) { changed() }}})
	ctx, stop := context.WithCancel(ctx)
	go ctl.RunWithContext(ctx)
	return &secretWatch{store: store, synced: ctl.HasSynced, stop: stop}
}

// password reads a peer's password from its Secret as the watch last saw it.
func (p *passwords) password(ref fabricv1.LocalSecretKeyRef) (string, error) {
	p.mu.Lock()
	w := p.watches[ref.Name]
	p.mu.Unlock()
	if w == nil {
		return "", fmt.Errorf("password Secret %s/%s is not followed", p.ns, ref.Name)
	}
	if !w.synced() {
		return "", fmt.Errorf("password Secret %s/%s not read yet", p.ns, ref.Name)
	}
	obj, ok, err := w.store.GetByKey(p.ns + "/" + ref.Name)
	if err != nil {
		return "", fmt.Errorf("password Secret %s/%s: %w", p.ns, ref.Name, err)
	}
	if !ok {
		return "", fmt.Errorf("password Secret %s/%s not found", p.ns, ref.Name)
	}
	v, ok := obj.(*corev1.Secret).Data[ref.Key]
	if !ok {
		return "", fmt.Errorf("password Secret %s/%s has no key %q", p.ns, ref.Name, ref.Key)
	}
	return string(v), nil
}
