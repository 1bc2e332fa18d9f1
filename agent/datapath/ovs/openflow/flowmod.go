package openflow

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Message types and constants of flow table changes.
const (
	typeExperimenter = 4
	typeFlowMod      = 14

	// The ONF extension that gives OpenFlow 1.3 the bundles of 1.4 (all or nothing).
	onfExperimenter   = 0x4f4e4600
	onfBundleControl  = 2300
	onfBundleAdd      = 2301
	bundleOpen        = 0
	bundleCommit      = 4
	bundleCommitReply = 5
	bundleAtomic      = 1
	bundleOrdered     = 2

	instructionGotoTable    = 1
	instructionApplyActions = 4

	portAny  = 0xffffffff
	groupAny = 0xffffffff

	nxExperimenter = 0x00002320
	nxMultipath    = 10
)

// Flow mod commands.
const (
	FlowAdd          uint8 = 0
	FlowDeleteStrict uint8 = 4
)

// Field is one OXM TLV: a match field (Mask optional) or the field a set_field action sets.
type Field struct {
	Header      uint32 // class<<16 | field<<9 | length (without the mask bit)
	Value, Mask []byte
}

func (f Field) encode() []byte {
	h := f.Header
	n := len(f.Value)
	if f.Mask != nil {
		h = h&^0xff | 1<<8 | uint32(2*n)
	}
	b := binary.BigEndian.AppendUint32(nil, h)
	b = append(b, f.Value...)
	return append(b, f.Mask...)
}

// OXM headers (OpenFlow basic class 0x8000; Nicira classes 0x0000 and 0x0001).
const (
	oxmInPort     = 0x8000<<16 | 0<<9 | 4
	oxmEthDst     = 0x8000<<16 | 3<<9 | 6
	oxmEthSrc     = 0x8000<<16 | 4<<9 | 6
	oxmEthType    = 0x8000<<16 | 5<<9 | 2
	oxmIPv4Src    = 0x8000<<16 | 11<<9 | 4
	oxmIPv4Dst    = 0x8000<<16 | 12<<9 | 4
	oxmTunnelID   = 0x8000<<16 | 38<<9 | 8
	nxmTunIPv4Dst = 0x0001<<16 | 32<<9 | 4
)

// InPort matches the OpenFlow port a packet entered on.
func InPort(p uint32) Field {
	return Field{Header: oxmInPort, Value: binary.BigEndian.AppendUint32(nil, p)}
}

// EthType matches an Ethernet type (0x0800: IPv4).
func EthType(t uint16) Field {
	return Field{Header: oxmEthType, Value: binary.BigEndian.AppendUint16(nil, t)}
}

// IPv4Src and IPv4Dst match an IPv4 prefix (a whole address when its length is 32).
func IPv4Src(p netip.Prefix) Field { return ipv4Field(oxmIPv4Src, p) }

// IPv4Dst: see IPv4Src.
func IPv4Dst(p netip.Prefix) Field { return ipv4Field(oxmIPv4Dst, p) }

func ipv4Field(h uint32, p netip.Prefix) Field {
	a := p.Masked().Addr().As4()
	f := Field{Header: h, Value: a[:]}
	if p.Bits() < 32 {
		f.Mask = binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
	}
	return f
}

// Reg is Nicira register n (NXM_NX_REGn) with value v.
func Reg(n int, v uint32) Field {
	return Field{Header: nxmReg(n), Value: binary.BigEndian.AppendUint32(nil, v)}
}

// EthDst and EthSrc are Ethernet addresses.
func EthDst(mac net.HardwareAddr) Field { return Field{Header: oxmEthDst, Value: mac} }

// EthSrc: see EthDst.
func EthSrc(mac net.HardwareAddr) Field { return Field{Header: oxmEthSrc, Value: mac} }

// TunnelID is the tunnel key (Geneve VNI, VXLAN VNI).
func TunnelID(v uint64) Field {
	return Field{Header: oxmTunnelID, Value: binary.BigEndian.AppendUint64(nil, v)}
}

// TunIPv4Dst is the outer destination of a flow-based tunnel port.
func TunIPv4Dst(a netip.Addr) Field {
	b := a.As4()
	return Field{Header: nxmTunIPv4Dst, Value: b[:]}
}

// Action is one encoded OpenFlow 1.3 action.
type Action []byte

// SetField sets a field.
func SetField(f Field) Action {
	b := binary.BigEndian.AppendUint16(nil, actionSetField)
	b = binary.BigEndian.AppendUint16(b, 0) // length, below
	b = append(b, f.encode()...)
	return pad8Action(b)
}

// Output sends the packet out of an OpenFlow port.
func Output(port uint32) Action {
	b := make([]byte, 16)
	binary.BigEndian.PutUint16(b[0:], actionOutput)
	binary.BigEndian.PutUint16(b[2:], 16)
	binary.BigEndian.PutUint32(b[4:], port)
	return b
}

// Multipath is Nicira's multipath action: it hashes the packet's fields (NX_HASH_FIELDS_*)
// with basis, picks one of nLinks by algorithm (NX_MP_ALG_*) and writes the link's index to
// bits [ofs, ofs+nBits) of register reg.
func Multipath(fields, basis, algorithm uint16, nLinks int, arg uint32, reg, ofs, nBits int) Action {
	b := make([]byte, 32)
	binary.BigEndian.PutUint16(b[0:], 0xffff) // experimenter action
	binary.BigEndian.PutUint16(b[2:], 32)
	binary.BigEndian.PutUint32(b[4:], nxExperimenter)
	binary.BigEndian.PutUint16(b[8:], nxMultipath)
	binary.BigEndian.PutUint16(b[10:], fields)
	binary.BigEndian.PutUint16(b[12:], basis)
	binary.BigEndian.PutUint16(b[16:], algorithm)
	binary.BigEndian.PutUint16(b[18:], uint16(nLinks-1))
	binary.BigEndian.PutUint32(b[20:], arg)
	binary.BigEndian.PutUint16(b[26:], uint16(ofs<<6|(nBits-1)))
	binary.BigEndian.PutUint32(b[28:], nxmReg(reg))
	return b
}

// pad8Action pads an action to a multiple of 8 bytes and writes its length.
func pad8Action(b []byte) Action {
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// FlowMod is one change of a flow table. A delete matches Table, Priority and Match exactly
// and ignores the rest.
type FlowMod struct {
	Command  uint8
	Table    uint8
	Priority uint16
	Cookie   uint64
	Match    []Field
	Actions  []Action
	// GotoTable continues in that table after the actions (0: no goto; table 0 is never a
	// goto's target, since gotos only go forward).
	GotoTable uint8
}

// encode returns the flow mod's body (after the OpenFlow header).
func (m FlowMod) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, m.Cookie)
	b = binary.BigEndian.AppendUint64(b, 0) // cookie mask
	b = append(b, m.Table, m.Command)
	b = binary.BigEndian.AppendUint16(b, 0) // idle timeout
	b = binary.BigEndian.AppendUint16(b, 0) // hard timeout
	b = binary.BigEndian.AppendUint16(b, m.Priority)
	b = binary.BigEndian.AppendUint32(b, noBuffer)
	b = binary.BigEndian.AppendUint32(b, portAny)
	b = binary.BigEndian.AppendUint32(b, groupAny)
	b = append(b, 0, 0, 0, 0) // flags, padding
	// The match: type OXM (1), its length without padding, the fields, padded to 8.
	var fields []byte
	for _, f := range m.Match {
		fields = append(fields, f.encode()...)
	}
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(4+len(fields)))
	b = append(b, fields...)
	b = append(b, make([]byte, (8-(4+len(fields))%8)%8)...)
	if m.Command == FlowDeleteStrict {
		return b
	}
	if len(m.Actions) > 0 {
		var acts []byte
		for _, a := range m.Actions {
			acts = append(acts, a...)
		}
		b = binary.BigEndian.AppendUint16(b, instructionApplyActions)
		b = binary.BigEndian.AppendUint16(b, uint16(8+len(acts)))
		b = append(b, 0, 0, 0, 0)
		b = append(b, acts...)
	}
	if m.GotoTable != 0 {
		b = binary.BigEndian.AppendUint16(b, instructionGotoTable)
		b = binary.BigEndian.AppendUint16(b, 8)
		b = append(b, m.GotoTable, 0, 0, 0)
	}
	return b
}

// message returns a whole OpenFlow message of type t with the given xid and body.
func message(t uint8, xid uint32, body []byte) []byte {
	msg := make([]byte, 8, 8+len(body))
	msg[0], msg[1] = version, t
	binary.BigEndian.PutUint16(msg[2:], uint16(8+len(body)))
	binary.BigEndian.PutUint32(msg[4:], xid)
	return append(msg, body...)
}

func bundleControl(id uint32, kind, flags uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, onfExperimenter)
	b = binary.BigEndian.AppendUint32(b, onfBundleControl)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint16(b, kind)
	return binary.BigEndian.AppendUint16(b, flags)
}

func bundleAdd(id uint32, flags uint16, inner []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, onfExperimenter)
	b = binary.BigEndian.AppendUint32(b, onfBundleAdd)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, flags)
	return append(b, inner...)
}

// BundleMessages are the messages that apply mods in one atomic, ordered bundle, numbered
// from xid on: open, one add per mod, commit (whose xid is the last).
func BundleMessages(id, xid uint32, mods []FlowMod) [][]byte {
	const flags = bundleAtomic | bundleOrdered
	out := [][]byte{message(typeExperimenter, xid, bundleControl(id, bundleOpen, flags))}
	for _, m := range mods {
		xid++
		out = append(out, message(typeExperimenter, xid, bundleAdd(id, flags, message(typeFlowMod, xid, m.encode()))))
	}
	xid++
	return append(out, message(typeExperimenter, xid, bundleControl(id, bundleCommit, flags)))
}

// DialWriter connects to a bridge's management socket to change its flow tables; it asks
// for no packet-ins.
func DialWriter(target string, timeout time.Duration) (*Conn, error) {
	return dial(target, timeout, false)
}

// ApplyFlowMods applies mods in one atomic bundle and waits (up to timeout) until the
// switch has committed it. The switch applies all of them or none; after an error the
// connection should be closed (it may still carry the switch's answers to this bundle).
func (c *Conn) ApplyFlowMods(mods []FlowMod, timeout time.Duration) error {
	if len(mods) == 0 {
		return nil
	}
	c.wmu.Lock()
	first := c.xid + 1
	c.xid += uint32(len(mods)) + 2
	c.bundle++
	msgs := BundleMessages(c.bundle, first, mods)
	var all []byte
	for _, m := range msgs {
		all = append(all, m...)
	}
	_ = c.c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.c.Write(all)
	_ = c.c.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	last := first + uint32(len(mods)) + 1
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.c.SetReadDeadline(time.Time{}) }()
	for {
		t, xid, body, err := c.read()
		if err != nil {
			return err
		}
		switch {
		case t == typeEchoRequest:
			if err := c.answerEcho(xid, body); err != nil {
				return err
			}
		case t == typeError && xid >= first && xid <= last:
			return fmt.Errorf("bundle message %d of %d: %w", xid-first+1, len(msgs), errMessage(body))
		case t == typeExperimenter && xid == last && len(body) >= 14 &&
			binary.BigEndian.Uint32(body) == onfExperimenter && binary.BigEndian.Uint32(body[4:]) == onfBundleControl &&
			binary.BigEndian.Uint16(body[12:]) == bundleCommitReply:
			return nil
		}
	}
}
