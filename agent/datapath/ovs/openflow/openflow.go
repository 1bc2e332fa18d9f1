// Package openflow is the small part of OpenFlow 1.3 the OVS driver speaks itself: a
// connection to a bridge's management socket that receives packet-ins (packets flows send
// to the controller) and sends packet-outs, and one that changes flow tables in atomic
// bundles (flow mods of a few shapes: what gateway failover changes).
package openflow

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// OpenFlow 1.3 message types and constants used here.
const (
	version = 0x04

	typeHello       = 0
	typeError       = 1
	typeEchoRequest = 2
	typeEchoReply   = 3
	typeSetConfig   = 9
	typePacketIn    = 10
	typePacketOut   = 13

	noBuffer       = 0xffffffff
	portController = 0xfffffffd
	portTable      = 0xfffffff9

	actionOutput   = 0
	actionSetField = 25

	// noBufferLen asks for whole packets, never buffer IDs.
	noBufferLen = 0xffff
)

// PacketIn is a packet a flow sent to the controller.
type PacketIn struct {
	Cookie  uint64
	TableID uint8
	Reason  uint8
	// InPort is the OpenFlow port the packet entered on (0 if the match did not say).
	InPort uint32
	// Data is the packet (up to the flow's max_len), starting with its Ethernet header.
	Data []byte
}

// Conn is a connection to one bridge.
type Conn struct {
	c   net.Conn
	r   *bufio.Reader
	wmu sync.Mutex
	xid uint32
	// bundle numbers the bundles ApplyFlowMods opens.
	bundle uint32
}

// Dial connects to a bridge's management socket ("unix:/path" or a path) and asks for
// packet-ins; the bridge sends none to management connections that did not ask.
func Dial(target string, timeout time.Duration) (*Conn, error) {
	return dial(target, timeout, true)
}

func dial(target string, timeout time.Duration, packetIns bool) (*Conn, error) {
	path := target
	if len(path) > 5 && path[:5] == "unix:" {
		path = path[5:]
	}
	nc, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, err
	}
	c := &Conn{c: nc, r: bufio.NewReaderSize(nc, 64<<10)}
	if err := c.send(typeHello, nil); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetReadDeadline(time.Now().Add(timeout))
	t, _, body, err := c.read()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("OpenFlow hello: %w", err)
	}
	if t != typeHello {
		nc.Close()
		return nil, fmt.Errorf("OpenFlow: expected hello, got message type %d (%x)", t, body)
	}
	_ = nc.SetReadDeadline(time.Time{})
	if !packetIns {
		return c, nil
	}
	cfg := make([]byte, 4)
	binary.BigEndian.PutUint16(cfg[2:], noBufferLen)
	if err := c.send(typeSetConfig, cfg); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the connection; a blocked ReadPacketIn returns.
func (c *Conn) Close() error { return c.c.Close() }

func (c *Conn) send(t uint8, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.xid++
	return c.sendXID(t, c.xid, body)
}

func (c *Conn) sendXID(t uint8, xid uint32, body []byte) error {
	msg := make([]byte, 8+len(body))
	msg[0], msg[1] = version, t
	binary.BigEndian.PutUint16(msg[2:], uint16(len(msg)))
	binary.BigEndian.PutUint32(msg[4:], xid)
	copy(msg[8:], body)
	_, err := c.c.Write(msg)
	return err
}

func (c *Conn) read() (uint8, uint32, []byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(h[2:]))
	if n < 8 {
		return 0, 0, nil, fmt.Errorf("OpenFlow message of length %d", n)
	}
	body := make([]byte, n-8)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, 0, nil, err
	}
	return h[1], binary.BigEndian.Uint32(h[4:]), body, nil
}

// ErrMessage is an OpenFlow error the switch sent.
type ErrMessage struct{ Type, Code uint16 }

func (e ErrMessage) Error() string {
	return fmt.Sprintf("OpenFlow error type %d code %d", e.Type, e.Code)
}

// answerEcho answers an echo request of the switch (which drops a connection that does not).
func (c *Conn) answerEcho(xid uint32, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendXID(typeEchoReply, xid, body)
}

// errMessage is the error an OpenFlow error message's body carries.
func errMessage(body []byte) error {
	if len(body) < 4 {
		return errors.New("OpenFlow error without a type")
	}
	return ErrMessage{binary.BigEndian.Uint16(body), binary.BigEndian.Uint16(body[2:])}
}

// ReadPacketIn returns the next packet-in. It answers echo requests on the way and skips
// other messages; an error message from the switch is returned as ErrMessage.
func (c *Conn) ReadPacketIn() (PacketIn, error) {
	for {
		t, xid, body, err := c.read()
		if err != nil {
			return PacketIn{}, err
		}
		switch t {
		case typeEchoRequest:
			if err := c.answerEcho(xid, body); err != nil {
				return PacketIn{}, err
			}
		case typeError:
			if len(body) >= 4 {
				return PacketIn{}, errMessage(body)
			}
		case typePacketIn:
			return parsePacketIn(body)
		}
	}
}

// parsePacketIn decodes an OpenFlow 1.3 packet-in body (after the header).
func parsePacketIn(b []byte) (PacketIn, error) {
	// buffer_id(4) total_len(2) reason(1) table_id(1) cookie(8) match(type 2, length 2, ...)
	if len(b) < 20 {
		return PacketIn{}, errors.New("short packet-in")
	}
	p := PacketIn{Reason: b[6], TableID: b[7], Cookie: binary.BigEndian.Uint64(b[8:])}
	mlen := int(binary.BigEndian.Uint16(b[18:]))
	if mlen < 4 || 16+mlen > len(b) {
		return PacketIn{}, errors.New("packet-in with a bad match length")
	}
	// OXM fields follow the match's type and length.
	for o := b[20 : 16+mlen]; len(o) >= 4; {
		hdr := binary.BigEndian.Uint32(o)
		n := int(hdr & 0xff)
		if 4+n > len(o) {
			break
		}
		if hdr>>16 == 0x8000 && (hdr>>9)&0x7f == 0 && n == 4 { // OXM_OF_IN_PORT
			p.InPort = binary.BigEndian.Uint32(o[4:])
		}
		o = o[4+n:]
	}
	start := 16 + (mlen+7)/8*8 + 2 // the match padded to 8 bytes, then 2 bytes of padding
	if start > len(b) {
		return PacketIn{}, errors.New("packet-in without data")
	}
	p.Data = b[start:]
	return p, nil
}

// nxmReg is the OXM header of Nicira register n (NXM_NX_REGn, 4 bytes).
func nxmReg(n int) uint32 { return 0x0001<<16 | uint32(n)<<9 | 4 }

// Inject sends a packet into the bridge's table 0 as if it came from the controller, with
// register reg set to value (so flows can tell injected packets apart).
func (c *Conn) Inject(data []byte, reg int, value uint32) error {
	actions := make([]byte, 32)
	// set_field: type, len 16, OXM header, value, 4 bytes of padding.
	binary.BigEndian.PutUint16(actions[0:], actionSetField)
	binary.BigEndian.PutUint16(actions[2:], 16)
	binary.BigEndian.PutUint32(actions[4:], nxmReg(reg))
	binary.BigEndian.PutUint32(actions[8:], value)
	// output to the tables: type, len 16, port, max_len, 6 bytes of padding.
	binary.BigEndian.PutUint16(actions[16:], actionOutput)
	binary.BigEndian.PutUint16(actions[18:], 16)
	binary.BigEndian.PutUint32(actions[20:], portTable)
	body := make([]byte, 16, 16+len(actions)+len(data))
	binary.BigEndian.PutUint32(body[0:], noBuffer)
	binary.BigEndian.PutUint32(body[4:], portController)
	binary.BigEndian.PutUint16(body[8:], uint16(len(actions)))
	body = append(body, actions...)
	body = append(body, data...)
	return c.send(typePacketOut, body)
}

// OpenFlow 1.3 multipart (statistics) messages.
const (
	typeMultipartRequest = 18
	typeMultipartReply   = 19
	multipartFlow        = 1
	multipartReplyMore   = 1
	tableAll             = 0xff
)

// FlowStat is one flow's counters.
type FlowStat struct {
	TableID  uint8
	Priority uint16
	Cookie   uint64
	Packets  uint64
	Bytes    uint64
}

// FlowStats reads the counters of every flow whose cookie matches cookie under mask, in
// one multipart exchange (up to timeout). It reads the connection's answers itself: use a
// connection nothing else reads (not the packet-in one).
func (c *Conn) FlowStats(cookie, mask uint64, timeout time.Duration) ([]FlowStat, error) {
	req := make([]byte, 8+40)
	binary.BigEndian.PutUint16(req[0:], multipartFlow)
	b := req[8:]
	b[0] = tableAll
	binary.BigEndian.PutUint32(b[4:], portAny)
	binary.BigEndian.PutUint32(b[8:], groupAny)
	binary.BigEndian.PutUint64(b[16:], cookie)
	binary.BigEndian.PutUint64(b[24:], mask)
	// An empty OXM match: type 1, length 4, padded to 8.
	binary.BigEndian.PutUint16(b[32:], 1)
	binary.BigEndian.PutUint16(b[34:], 4)
	c.wmu.Lock()
	c.xid++
	xid := c.xid
	_ = c.c.SetWriteDeadline(time.Now().Add(timeout))
	err := c.sendXID(typeMultipartRequest, xid, req)
	_ = c.c.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.c.SetReadDeadline(time.Time{}) }()
	var out []FlowStat
	for {
		t, rx, body, err := c.read()
		if err != nil {
			return nil, err
		}
		switch {
		case t == typeEchoRequest:
			if err := c.answerEcho(rx, body); err != nil {
				return nil, err
			}
		case t == typeError && rx == xid:
			return nil, errMessage(body)
		case t == typeMultipartReply && rx == xid:
			if len(body) < 8 || binary.BigEndian.Uint16(body) != multipartFlow {
				return nil, fmt.Errorf("OpenFlow: unexpected multipart reply %x", body)
			}
			stats, err := parseFlowStats(body[8:])
			if err != nil {
				return nil, err
			}
			out = append(out, stats...)
			if binary.BigEndian.Uint16(body[2:])&multipartReplyMore == 0 {
				return out, nil
			}
		}
	}
}

// parseFlowStats reads a flow multipart reply's ofp_flow_stats entries.
func parseFlowStats(b []byte) ([]FlowStat, error) {
	var out []FlowStat
	for len(b) > 0 {
		if len(b) < 48 {
			return nil, fmt.Errorf("OpenFlow: flow stats entry of %d bytes", len(b))
		}
		n := int(binary.BigEndian.Uint16(b))
		if n < 48 || n > len(b) {
			return nil, fmt.Errorf("OpenFlow: flow stats entry of length %d (%d left)", n, len(b))
		}
		out = append(out, FlowStat{TableID: b[2], Priority: binary.BigEndian.Uint16(b[12:]), Cookie: binary.BigEndian.Uint64(b[24:]),
			Packets: binary.BigEndian.Uint64(b[32:]), Bytes: binary.BigEndian.Uint64(b[40:])})
		b = b[n:]
	}
	return out, nil
}
