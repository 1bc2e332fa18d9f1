package clusterpeer

import (
	"testing"
	"time"
)

func TestBackoffDoublesUpToMaxAndResets(t *testing.T) {
	b := newBackoff(time.Second, 10*time.Second)
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i, w := range want {
		if got := b.next("p"); got != w*time.Second {
			t.Fatalf("failure %d: got %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := b.next("other"); got != time.Second {
		t.Errorf("another peer starts at %v, want 1s", got)
	}
	b.reset("p")
	if got := b.next("p"); got != time.Second {
		t.Errorf("after reset got %v, want 1s", got)
	}
}
