package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/cilium/ebpf/perf"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/weft-net/weft/agent/datapath"
	"github.com/weft-net/weft/agent/datapath/packet"
)

// What the programs hand the agent (struct event in bpf/weft.c).
const (
	eventLog    = 1
	eventReject = 2
	eventDNS    = 4
	eventHeader = 20
)

type event struct {
	pod        netip.Addr
	generation uint32
	kind, dir  uint8
	rule       int
	data       []byte // the packet's Ethernet frame, or its first bytes
}

func parseEvent(raw []byte) (event, error) {
	if len(raw) < eventHeader {
		return event{}, errors.New("short event")
	}
	var pod [4]byte
	copy(pod[:], raw[0:4])
	e := event{pod: netip.AddrFrom4(pod), generation: binary.NativeEndian.Uint32(raw[4:]), kind: raw[8], dir: raw[9],
		rule: int(binary.NativeEndian.Uint16(raw[12:]))}
	if e.rule == 0xffff {
		e.rule = -1
	}
	n := int(binary.NativeEndian.Uint32(raw[16:]))
	if n > len(raw)-eventHeader {
		return event{}, fmt.Errorf("event says %d bytes, has %d", n, len(raw)-eventHeader)
	}
	e.data = raw[eventHeader : eventHeader+n]
	return e, nil
}

// startEvents reads the programs' events and opens the socket the agent sends packets into
// pods with (marked: the programs let them through). Called with d.mu held, in the node's
// network namespace.
func (d *Driver) startEvents() error {
	if d.events != nil {
		return nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, injectMark); err != nil {
		unix.Close(fd)
		return fmt.Errorf("raw socket mark: %w", err)
	}
	rd, err := perf.NewReader(d.objs.Events, 16*os.Getpagesize())
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("reading the programs' events: %w", err)
	}
	d.events = rd
	go d.readEvents(rd, fd)
	return nil
}

func (d *Driver) stopEvents() {
	if d.events != nil {
		_ = d.events.Close()
		d.events = nil
	}
}

func (d *Driver) readEvents(rd *perf.Reader, fd int) {
	defer unix.Close(fd)
	log := klog.Background().WithName("ebpf-events")
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			log.Error(err, "reading an event")
			continue
		}
		if rec.LostSamples > 0 {
			log.Info("events lost (the reader fell behind)", "count", rec.LostSamples)
			continue
		}
		e, err := parseEvent(rec.RawSample)
		if err != nil {
			log.Error(err, "bad event")
			continue
		}
		d.handleEvent(e, fd, log)
	}
}

func (d *Driver) handleEvent(e event, fd int, log klog.Logger) {
	if e.kind&eventDNS != 0 {
		d.learnDNS(e, fd, log)
		return
	}
	if e.kind&eventReject != 0 {
		if ans, err := packet.Reject(e.data); err == nil {
			if err := inject(fd, ans); err != nil {
				log.Error(err, "sending a rejection")
			}
		}
	}
	if e.kind&eventLog != 0 && d.opts.OnPolicyEvent != nil {
		in, err := packet.Parse(e.data)
		if err != nil {
			return
		}
		rule, ok := d.ruleInfo(e.generation, e.pod, e.dir, e.rule)
		if !ok {
			rule = datapath.RuleInfo{Policy: "(unknown rule)"}
		}
		d.opts.OnPolicyEvent(datapath.PolicyEvent{Rule: rule, Src: in.Src, Dst: in.Dst, Protocol: in.ProtocolName(),
			SrcPort: int(in.SrcPort), DstPort: int(in.DstPort)})
	}
}

// learnDNS hands a DNS answer to the agent, then delivers it: by the time the pod reads the
// answer, the policy allows the addresses its FQDN rules matched.
func (d *Driver) learnDNS(e event, fd int, log klog.Logger) {
	d.dnsHolder.Hold(e.pod, e.data, func() {
		// The sender may have left the UDP checksum to the NIC (only the pseudo-header's
		// sum is there): no checksum is a valid choice over IPv4.
		if len(e.data) < 14 {
			return
		}
		if ip := e.data[14:]; len(ip) >= 20 && len(ip) >= int(ip[0]&0x0f)*4+8 {
			udp := ip[int(ip[0]&0x0f)*4:]
			udp[6], udp[7] = 0, 0
		}
		if err := inject(fd, e.data); err != nil {
			log.Error(err, "delivering a DNS answer")
		}
	})
}

// inject sends an Ethernet frame's IPv4 packet through the node's kernel, which routes it to
// its destination.
func inject(fd int, frame []byte) error {
	if len(frame) < 14+20 {
		return errors.New("short frame")
	}
	ip := frame[14:]
	var dst [4]byte
	copy(dst[:], ip[16:20])
	return unix.Sendto(fd, ip, 0, &unix.SockaddrInet4{Addr: dst})
}
