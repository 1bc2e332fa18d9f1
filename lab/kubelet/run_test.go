package kubelet

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// An exec asking for a TTY and stderr (client-go's SPDY executor with TTY) reaches the
// exec handler without stderr, as the kubelet does; other requests pass unchanged.
func TestTTYWithoutStderr(t *testing.T) {
	var got string
	h := ttyWithoutStderr(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.URL.RawQuery }))
	for query, want := range map[string]string{
		"command=sh&error=1&output=1&tty=1": "command=sh&output=1&tty=1",
		"command=sh&error=1&output=1":       "command=sh&error=1&output=1",
		"command=sh&output=1&tty=1":         "command=sh&output=1&tty=1",
	} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/exec/ns/pod/c?"+query, nil))
		if got != want {
			t.Errorf("%s reached the handler as %s, want %s", query, got, want)
		}
	}
}
