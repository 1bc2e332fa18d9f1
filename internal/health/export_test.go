package health

import "time"

// Stall keeps the prober from running (sending, reading answers, deciding) for d, as a
// process starved of CPU or stopped is kept: answers meanwhile wait in its socket.
func (p *Prober) Stall(d time.Duration) {
	p.mu.Lock()
	time.Sleep(d)
	p.mu.Unlock()
}

// PauseReceiver keeps the prober from reading answers for d while it goes on probing, as a
// receiver that lags under load: answers meanwhile wait in its socket.
func (p *Prober) PauseReceiver(d time.Duration) {
	p.recvMu.Lock()
	time.Sleep(d)
	p.recvMu.Unlock()
}
