package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
)

// GoBGP tells why a session failed — a NOTIFICATION sent or received, say "bad peer AS" —
// only in its log. notificationLog reads those records (keyed by the peer's address) into
// the speaker's last errors and passes on what is at least Warn to the agent's log.
type notificationLog struct {
	next  slog.Handler
	attrs []slog.Attr
	s     *Speaker
}

func (h *notificationLog) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo
}

func (h *notificationLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "sent notification" || r.Message == "received notification" {
		var key string
		var code, sub int64
		visit := func(a slog.Attr) bool {
			switch a.Key {
			case "Key":
				key = a.Value.String()
			case "Code":
				code = a.Value.Int64()
			case "Subcode":
				sub = a.Value.Int64()
			}
			return true
		}
		for _, a := range h.attrs {
			visit(a)
		}
		r.Attrs(visit)
		if addr, err := netip.ParseAddr(key); err == nil {
			who := "this speaker"
			if r.Message == "received notification" {
				who = "the peer"
			}
			h.s.setErr(addr, fmt.Sprintf("%s closed the session: %s", who, notification(code, sub)))
		}
	}
	if r.Level < slog.LevelWarn || !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.WithAttrs(h.attrs).Handle(ctx, r)
}

func (h *notificationLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &notificationLog{next: h.next, attrs: append(append([]slog.Attr{}, h.attrs...), attrs...), s: h.s}
}

func (h *notificationLog) WithGroup(string) slog.Handler { return h }

// notification names a NOTIFICATION's error (RFC 4271 §4.5, RFC 4486).
func notification(code, sub int64) string {
	switch {
	case code == 2 && sub == 2:
		return "bad peer AS (the AS number configured for the peer is not the one it uses)"
	case code == 2 && sub == 3:
		return "bad BGP identifier (router ID)"
	case code == 2:
		return fmt.Sprintf("OPEN message error (subcode %d)", sub)
	case code == 4:
		return "hold timer expired"
	case code == 6 && sub == 2:
		return "administratively shut down"
	case code == 6 && sub == 3:
		return "peer de-configured"
	case code == 6 && sub == 4:
		return "administratively reset"
	case code == 6 && sub == 5:
		return "connection rejected (the peer does not accept this node)"
	case code == 6:
		return fmt.Sprintf("cease (subcode %d)", sub)
	}
	return fmt.Sprintf("error code %d subcode %d", code, sub)
}

func (s *Speaker) setErr(addr netip.Addr, why string) {
	s.errMu.Lock()
	s.lastErr[addr] = why
	s.errMu.Unlock()
}
