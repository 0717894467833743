package measure

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// DevicePath is an EFI_DEVICE_PATH_PROTOCOL byte string (UEFI 2.10,
// chapter 10), as found in image load events and load options. It is kept
// as bytes; [DevicePath.Nodes] decodes it and [DevicePath.String] prints it
// in the UEFI text form ("PciRoot(0x0)/Pci(0x3,0x0)/HD(1,GPT,...)/\EFI\BOOT\BOOTX64.EFI").
type DevicePath []byte

// DevicePathNode is one node of a device path. Data is the node's data
// after its 4-byte header and aliases the path.
type DevicePathNode struct {
	Type    uint8
	SubType uint8
	Data    []byte
}

// Device path node types.
const (
	DevicePathHardware  = 0x01
	DevicePathACPI      = 0x02
	DevicePathMessaging = 0x03
	DevicePathMedia     = 0x04
	DevicePathBBS       = 0x05
	DevicePathEnd       = 0x7F
)

// MaxDevicePathNodes bounds the nodes [ParseDevicePath] decodes.
const MaxDevicePathNodes = 1024

// ParseDevicePath decodes a device path into nodes, stopping at the
// end-of-entire-path node. Bytes after it are an error.
func ParseDevicePath(b []byte) ([]DevicePathNode, error) {
	var out []DevicePathNode
	for off := 0; off < len(b); {
		if len(b)-off < 4 {
			return nil, fmt.Errorf("measure: device path: node at %d: %d bytes, the header needs 4", off, len(b)-off)
		}
		n := DevicePathNode{Type: b[off], SubType: b[off+1]}
		size := int(binary.LittleEndian.Uint16(b[off+2:]))
		if size < 4 || size > len(b)-off {
			return nil, fmt.Errorf("measure: device path: node at %d: length %d, %d bytes remain", off, size, len(b)-off)
		}
		n.Data = b[off+4 : off+size : off+size]
		off += size
		if n.Type == DevicePathEnd && size != 4 {
			return nil, fmt.Errorf("measure: device path: end node of %d bytes, want 4", size)
		}
		if n.Type == DevicePathEnd && n.SubType == 0xFF {
			if off != len(b) {
				return nil, fmt.Errorf("measure: device path: %d bytes after the end node", len(b)-off)
			}
			return out, nil
		}
		if len(out) >= MaxDevicePathNodes {
			return nil, fmt.Errorf("measure: device path: more than %d nodes", MaxDevicePathNodes)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, fmt.Errorf("measure: device path: no end node")
}

// Nodes decodes the path; see [ParseDevicePath].
func (p DevicePath) Nodes() ([]DevicePathNode, error) { return ParseDevicePath(p) }

// String returns the UEFI text form of the path. A path that does not
// decode is printed as far as it does, followed by the error.
func (p DevicePath) String() string {
	nodes, err := ParseDevicePath(p)
	var b strings.Builder
	for i, n := range nodes {
		s := n.String()
		if i > 0 && !(n.Type == DevicePathMedia && n.SubType == 4 && strings.HasPrefix(s, "\\") && strings.HasSuffix(b.String(), "\\")) {
			b.WriteByte('/')
		}
		b.WriteString(s)
	}
	if err != nil {
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		fmt.Fprintf(&b, "<%v>", err)
	}
	return b.String()
}

// MarshalText encodes the path in its text form.
func (p DevicePath) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// FilePath returns the concatenation of the path's file path nodes
// ("\EFI\BOOT\BOOTX64.EFI"), or "".
func (p DevicePath) FilePath() string {
	nodes, _ := ParseDevicePath(p)
	var b strings.Builder
	for _, n := range nodes {
		if n.Type == DevicePathMedia && n.SubType == 4 {
			s, _ := decodeUCS2(n.Data)
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "\\") && !strings.HasPrefix(s, "\\") {
				b.WriteByte('\\')
			}
			b.WriteString(s)
		}
	}
	return b.String()
}

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// String returns the UEFI text form of the node (UEFI 2.10, section
// 10.6.1). Nodes this package does not know, and known nodes whose length
// is wrong, print as Path(type,subtype,hexdata).
func (n DevicePathNode) String() string {
	d := n.Data
	switch n.Type {
	case DevicePathHardware:
		switch {
		case n.SubType == 1 && len(d) == 2:
			return fmt.Sprintf("Pci(0x%x,0x%x)", d[1], d[0])
		case n.SubType == 3 && len(d) == 20:
			return fmt.Sprintf("MemoryMapped(0x%x,0x%x,0x%x)", le32(d), le64(d[4:]), le64(d[12:]))
		case n.SubType == 4 && len(d) >= 16:
			return vendorNode("VenHw", d)
		case n.SubType == 5 && len(d) == 4:
			return fmt.Sprintf("Ctrl(0x%x)", le32(d))
		}
	case DevicePathACPI:
		switch {
		case n.SubType == 1 && len(d) == 8:
			hid, uid := le32(d), le32(d[4:])
			switch hid {
			case 0x0A0341D0:
				return fmt.Sprintf("PciRoot(0x%x)", uid)
			case 0x0A0841D0:
				return fmt.Sprintf("PcieRoot(0x%x)", uid)
			}
			return fmt.Sprintf("Acpi(%s,0x%x)", eisaID(hid), uid)
		case n.SubType == 3 && len(d) >= 4:
			return fmt.Sprintf("AcpiAdr(0x%x)", le32(d))
		}
	case DevicePathMessaging:
		switch {
		case n.SubType == 1 && len(d) == 4:
			return fmt.Sprintf("Ata(0x%x,0x%x,0x%x)", d[0], d[1], le16(d[2:]))
		case n.SubType == 2 && len(d) == 4:
			return fmt.Sprintf("Scsi(0x%x,0x%x)", le16(d), le16(d[2:]))
		case n.SubType == 5 && len(d) == 2:
			return fmt.Sprintf("USB(0x%x,0x%x)", d[0], d[1])
		case n.SubType == 10 && len(d) >= 16:
			return vendorNode("VenMsg", d)
		case n.SubType == 11 && len(d) == 33:
			return fmt.Sprintf("MAC(%x,0x%x)", d[:6], d[32])
		case n.SubType == 12 && len(d) >= 15:
			a := netip.AddrFrom4([4]byte(d[4:8]))
			return fmt.Sprintf("IPv4(%s)", a)
		case n.SubType == 13 && len(d) >= 36:
			a := netip.AddrFrom16([16]byte(d[16:32]))
			return fmt.Sprintf("IPv6(%s)", a)
		case n.SubType == 18 && len(d) == 6:
			return fmt.Sprintf("Sata(0x%x,0x%x,0x%x)", le16(d), le16(d[2:]), le16(d[4:]))
		case n.SubType == 23 && len(d) == 12:
			return fmt.Sprintf("NVMe(0x%x,%X)", le32(d), d[4:12])
		case n.SubType == 24:
			if s, ok := printableASCII(d); (ok && isPrintable(s)) || len(d) == 0 {
				return "Uri(" + s + ")"
			}
		case n.SubType == 26 && len(d) == 1:
			return fmt.Sprintf("SD(0x%x)", d[0])
		case n.SubType == 29 && len(d) == 1:
			return fmt.Sprintf("eMMC(0x%x)", d[0])
		}
	case DevicePathMedia:
		switch {
		case n.SubType == 1 && len(d) == 38:
			return hardDriveNode(d)
		case n.SubType == 2 && len(d) == 20:
			return fmt.Sprintf("CDROM(0x%x,0x%x,0x%x)", le32(d), le64(d[4:]), le64(d[12:]))
		case n.SubType == 3 && len(d) >= 16:
			return vendorNode("VenMedia", d)
		case n.SubType == 4:
			// Printed as is only when printable, so that a hostile path
			// cannot forge lines in a report.
			if s, ok := decodeUCS2(d); ok && isPrintable(s) {
				return s
			}
		case n.SubType == 5 && len(d) == 16:
			return fmt.Sprintf("Media(%s)", GUID(d))
		case n.SubType == 6 && len(d) == 16:
			return fmt.Sprintf("FvFile(%s)", GUID(d))
		case n.SubType == 7 && len(d) == 16:
			return fmt.Sprintf("Fv(%s)", GUID(d))
		case n.SubType == 8 && len(d) == 20:
			return fmt.Sprintf("Offset(0x%x,0x%x)", le64(d[4:]), le64(d[12:]))
		}
	case DevicePathBBS:
		if n.SubType == 1 && len(d) >= 4 {
			return fmt.Sprintf("BBS(0x%x,%q,0x%x)", le16(d), prefixUntilNUL(d[4:]), le16(d[2:]))
		}
	case DevicePathEnd:
		if n.SubType == 1 {
			return ","
		}
	}
	return fmt.Sprintf("Path(%d,%d,%X)", n.Type, n.SubType, d)
}

func vendorNode(name string, d []byte) string {
	if len(d) == 16 {
		return fmt.Sprintf("%s(%s)", name, GUID(d[:16]))
	}
	return fmt.Sprintf("%s(%s,%X)", name, GUID(d[:16]), d[16:])
}

func hardDriveNode(d []byte) string {
	part, start, size := le32(d), le64(d[4:]), le64(d[12:])
	sig := d[20:36]
	switch d[37] {
	case 1: // MBR
		return fmt.Sprintf("HD(%d,MBR,0x%08x,0x%x,0x%x)", part, le32(sig), start, size)
	case 2: // GPT
		return fmt.Sprintf("HD(%d,GPT,%s,0x%x,0x%x)", part, GUID(sig), start, size)
	}
	return fmt.Sprintf("HD(%d,%d,0,0x%x,0x%x)", part, d[37], start, size)
}

// eisaID prints a compressed EISA ID ("PNP0A03").
func eisaID(id uint32) string {
	v := id & 0xFFFF
	c1 := byte((v>>10)&0x1F) + 'A' - 1
	c2 := byte((v>>5)&0x1F) + 'A' - 1
	c3 := byte(v&0x1F) + 'A' - 1
	return fmt.Sprintf("%c%c%c%04X", c1, c2, c3, id>>16)
}
