package health

import "time"

// Stall keeps the prober from running (sending, reading answers, deciding) for d, as a
// process starved of CPU or stopped is kept: answers meanwhile wait in its socket.
func (p *Prober) Stall(d time.Duration) {
	p.mu.Lock()
	time.Sleep(d)
	p.mu.Unlock()
}
