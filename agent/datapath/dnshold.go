package datapath

import (
	"net/netip"

	"github.com/weft-net/weft/agent/datapath/packet"
)

// DNSHolder hands held DNS answers to Options.OnDNSAnswer and delivers each once it returns,
// up to a limit of answers at once, each in its own goroutine: answers that arrive together
// are learnt together (the agent applies their addresses in one policy update), and one slow
// update does not hold back the answers of other pods. Beyond the limit the caller waits (the
// datapath's queue of held answers then fills, and its overflow is dropped: clients ask again).
type DNSHolder struct {
	learn func(DNSAnswer)
	slots chan struct{}
}

// MaxHeldDNSAnswers is how many answers a node holds at once.
const MaxHeldDNSAnswers = 256

// NewDNSHolder returns a holder handing answers to learn (nil: they are delivered at once).
func NewDNSHolder(learn func(DNSAnswer)) *DNSHolder {
	return &DNSHolder{learn: learn, slots: make(chan struct{}, MaxHeldDNSAnswers)}
}

// Hold learns the addresses the DNS answer in frame (an Ethernet frame) gives pod, when it
// gives any, then calls deliver; it returns at once unless the limit of held answers is
// reached.
func (h *DNSHolder) Hold(pod netip.Addr, frame []byte, deliver func()) {
	var ans DNSAnswer
	if h.learn != nil && pod.IsValid() {
		if recs, err := packet.DNSAnswer(frame); err == nil {
			ans.Pod = pod
			for _, r := range recs {
				ans.Records = append(ans.Records, DNSRecord{Name: r.Name, Addr: r.Addr, TTL: r.TTL})
			}
		}
	}
	if len(ans.Records) == 0 {
		deliver()
		return
	}
	h.slots <- struct{}{}
	go func() {
		defer func() { <-h.slots }()
		h.learn(ans)
		deliver()
	}()
}
