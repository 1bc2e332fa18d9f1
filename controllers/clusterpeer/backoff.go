package clusterpeer

import (
	"sync"
	"time"
)

// backoff counts consecutive failures per peer and spaces out retries exponentially.
type backoff struct {
	base, max time.Duration

	mu       sync.Mutex
	failures map[string]int
}

func newBackoff(base, max time.Duration) *backoff {
	return &backoff{base: base, max: max, failures: map[string]int{}}
}

// next records a failure and returns how long to wait before the next try.
func (b *backoff) next(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.failures[key]
	b.failures[key] = n + 1
	d := b.base
	for i := 0; i < n && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// reset forgets a peer's failures after a success or when the peer is gone.
func (b *backoff) reset(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.failures, key)
}
