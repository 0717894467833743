package measure

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unsafe"
)

// GUID is an EFI_GUID in its wire encoding: the first three fields are
// little-endian (UEFI 2.10, Appendix A).
type GUID [16]byte

// ParseGUID parses the canonical text form "8be4df61-93ca-11d2-aa0d-00e098032b8c".
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("measure: malformed GUID %q", s)
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(s[0:8]+s[9:13]+s[14:18]+s[19:23]+s[24:36])); err != nil {
		return g, fmt.Errorf("measure: malformed GUID %q", s)
	}
	binary.LittleEndian.PutUint32(g[0:], binary.BigEndian.Uint32(b[0:]))
	binary.LittleEndian.PutUint16(g[4:], binary.BigEndian.Uint16(b[4:]))
	binary.LittleEndian.PutUint16(g[6:], binary.BigEndian.Uint16(b[6:]))
	copy(g[8:], b[8:])
	return g, nil
}

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// String returns the canonical lower-case text form.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:]), binary.LittleEndian.Uint16(g[4:]),
		binary.LittleEndian.Uint16(g[6:]), g[8:10], g[10:])
}

// MarshalText encodes the GUID in its canonical text form.
func (g GUID) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// UnmarshalText parses the canonical text form.
func (g *GUID) UnmarshalText(b []byte) error {
	v, err := ParseGUID(string(b))
	*g = v
	return err
}

// Well-known GUIDs of the UEFI specification, shim and Linux.
var (
	// GlobalVariableGUID (EFI_GLOBAL_VARIABLE) owns SecureBoot, PK, KEK,
	// SetupMode, AuditMode, DeployedMode, Boot#### and BootOrder.
	GlobalVariableGUID = mustGUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	// ImageSecurityDatabaseGUID (EFI_IMAGE_SECURITY_DATABASE_GUID) owns db,
	// dbx, dbt and dbr.
	ImageSecurityDatabaseGUID = mustGUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
	// ShimLockGUID owns shim's MokList, MokListX, MokListTrusted, SbatLevel
	// and its "Shim" authority.
	ShimLockGUID = mustGUID("605dab50-e046-4300-abb6-3dd810dd8b23")

	// CertX509GUID (EFI_CERT_X509_GUID): a DER X.509 certificate.
	CertX509GUID = mustGUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
	// CertSHA256GUID (EFI_CERT_SHA256_GUID): a SHA-256 image hash.
	CertSHA256GUID = mustGUID("c1c41626-504c-4092-aca9-41f936934328")
	// CertSHA1GUID (EFI_CERT_SHA1_GUID).
	CertSHA1GUID = mustGUID("826ca512-cf10-4ac9-b187-be01496631bd")
	// CertSHA224GUID, CertSHA384GUID, CertSHA512GUID: image hashes.
	CertSHA224GUID = mustGUID("0b6e5233-a65c-44c9-9407-d9ab83bfc8bd")
	CertSHA384GUID = mustGUID("ff3e5307-9fd0-48c9-85f1-8ad56c701e01")
	CertSHA512GUID = mustGUID("093e0fae-a6c4-4f50-9f1b-d41e2b89c19a")
	// CertRSA2048GUID (EFI_CERT_RSA2048_GUID): an RSA-2048 modulus.
	CertRSA2048GUID = mustGUID("3c5766e8-269c-4e34-aa14-ed776e85b3b6")
	// CertX509SHA256GUID, CertX509SHA384GUID, CertX509SHA512GUID: the hash
	// of a certificate's TBS, with a revocation time (dbx).
	CertX509SHA256GUID = mustGUID("3bd2a492-96c0-4079-b420-fcf98ef103ed")
	CertX509SHA384GUID = mustGUID("7076876e-80c2-4ee6-aad2-28b349a6865b")
	CertX509SHA512GUID = mustGUID("446dbf63-2502-4cda-bcfa-2465d2b0fe9d")
)

var certTypeNames = map[GUID]string{
	CertX509GUID:       "x509",
	CertSHA256GUID:     "sha256",
	CertSHA1GUID:       "sha1",
	CertSHA224GUID:     "sha224",
	CertSHA384GUID:     "sha384",
	CertSHA512GUID:     "sha512",
	CertRSA2048GUID:    "rsa2048",
	CertX509SHA256GUID: "x509-sha256",
	CertX509SHA384GUID: "x509-sha384",
	CertX509SHA512GUID: "x509-sha512",
}

var errShort = errors.New("measure: data too short")

// decodeUCS2 decodes little-endian UTF-16 up to the first NUL character.
// It reports false when b has an odd length or holds a lone surrogate.
func decodeUCS2(b []byte) (string, bool) {
	return decodeUCS2In(b, nil)
}

// decodeUCS2In is decodeUCS2 with an ASCII string carved from the arena's
// buffer when a is not nil.
func decodeUCS2In(b []byte, a *decodeArena) (string, bool) {
	if len(b)%2 != 0 {
		return "", false
	}
	n := len(b) / 2
	// Fast path: ASCII only, no allocation beyond the string.
	ascii := true
	end := n
	for i := range n {
		c := binary.LittleEndian.Uint16(b[2*i:])
		if c == 0 {
			end = i
			break
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	if ascii && a != nil && end > 0 && end <= maxArenaString {
		if cap(a.strs)-len(a.strs) < end {
			a.grow(end)
		}
		start := len(a.strs)
		for i := range end {
			a.strs = append(a.strs, b[2*i])
		}
		return unsafe.String(&a.strs[start], end), true
	}
	if ascii {
		var sb strings.Builder
		sb.Grow(end)
		for i := range end {
			sb.WriteByte(b[2*i])
		}
		return sb.String(), true
	}
	u := make([]uint16, end)
	for i := range end {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	for i := 0; i < len(u); i++ {
		switch {
		case utf16.IsSurrogate(rune(u[i])):
			if u[i] >= 0xDC00 || i+1 >= len(u) || u[i+1] < 0xDC00 || u[i+1] > 0xDFFF {
				return "", false
			}
			i++
		}
	}
	return string(utf16.Decode(u)), true
}

// printableASCII reports whether b (without trailing NULs) is non-empty
// printable ASCII text.
func printableASCII(b []byte) (string, bool) {
	return printableASCIIIn(b, nil)
}

// printableASCIIIn is printableASCII with the string copied into an
// arena's buffer when a is not nil.
func printableASCIIIn(b []byte, a *decodeArena) (string, bool) {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	if len(b) == 0 || !isPrintableASCII(b) {
		return "", false
	}
	if len(b) < 64 && commonLengths&(1<<len(b)) != 0 && commonFirst[b[0]/64]&(1<<(b[0]%64)) != 0 {
		if s, ok := commonStrings[string(b)]; ok { // no allocation for the lookup
			return s, true
		}
	}
	if a != nil {
		return a.string(b), true
	}
	return string(b), true
}

// isPrintableASCII reports whether every byte of b is printable ASCII
// (0x20-0x7E), a tab, a line feed or a carriage return. It tests eight
// bytes at a time and looks at single bytes only in a word that holds a
// byte outside 0x20-0x7E.
func isPrintableASCII(b []byte) bool {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	for len(b) >= 8 {
		w := binary.LittleEndian.Uint64(b)
		// The high bit of a byte of lo is set when that byte is below 0x20
		// (and has its own high bit clear); of hi, when it is above 0x7E
		// or has its high bit set.
		lo := (w - 0x20*ones) &^ w & high
		hi := ((w + (0x7F-0x7E)*ones) | w) & high
		if lo|hi != 0 && !printableBytes(b[:8]) {
			return false
		}
		b = b[8:]
	}
	return printableBytes(b)
}

func printableBytes(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 || c > 0x7E) && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

// commonStrings are strings logs repeat, returned without allocating.
// commonLengths has bit n set when one of them is n bytes long, and
// commonFirst bit c when one of them starts with byte c, so that most
// strings (GRUB's) skip the lookup.
var commonStrings, commonLengths, commonFirst = func() (map[string]string, uint64, [4]uint64) {
	m := map[string]string{}
	var lens uint64
	var first [4]uint64
	for _, s := range []string{
		"Calling EFI Application from Boot Option", "Returning from EFI Application from Boot Option",
		"Exit Boot Services Invocation", "Exit Boot Services Returned with Success",
		"Exit Boot Services Returned with Failure", "DMA Protection Disabled", "ACPI DATA", "SMM CODE",
		"POST CODE", "BIS CODE", "Embedded UEFI Driver", "Embedded UEFI Application", "Embedded Option ROM",
		"MokList", "MokListX", "MokListTrusted", "BOOT ATTEMPTS OMITTED", "WBCL",
	} {
		if len(s) >= 64 {
			panic("measure: common string too long: " + s)
		}
		m[s] = s
		lens |= 1 << len(s)
		first[s[0]/64] |= 1 << (s[0] % 64)
	}
	return m, lens, first
}()

// commonNames are UEFI variable names, keyed by their UTF-16 encoding, so
// that decoding them does not allocate.
var commonNames = func() map[string]string {
	m := map[string]string{}
	names := []string{"SecureBoot", "SetupMode", "AuditMode", "DeployedMode", "PK", "KEK", "db", "dbx", "dbt", "dbr",
		"BootOrder", "BootNext", "BootCurrent", "MokList", "MokListX", "MokListTrusted", "SbatLevel", "Shim"}
	for i := range 32 {
		names = append(names, fmt.Sprintf("Boot%04X", i))
	}
	for _, n := range names {
		var b []byte
		for _, c := range n {
			b = append(b, byte(c), 0)
		}
		m[string(b)] = n
	}
	return m
}()

// Hex is a byte string that encodes as lower-case hex in JSON and text.
type Hex []byte

// MarshalText encodes h in lower-case hex.
func (h Hex) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(h)))
	hex.Encode(out, h)
	return out, nil
}

// UnmarshalText decodes hex.
func (h *Hex) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	*h = v
	return err
}

// String returns the lower-case hex encoding.
func (h Hex) String() string { return hex.EncodeToString(h) }

// UTF16 is a little-endian UTF-16 string as firmware and Windows log it,
// kept as the log's bytes and decoded only when printed or compared.
type UTF16 []byte

// String decodes the string up to its first NUL character. Bytes that are
// not UTF-16 decode as U+FFFD.
func (u UTF16) String() string {
	if s, ok := decodeUCS2(u[:len(u)&^1]); ok {
		return s
	}
	r := make([]uint16, 0, len(u)/2)
	for i := 0; i+1 < len(u); i += 2 {
		c := binary.LittleEndian.Uint16(u[i:])
		if c == 0 {
			break
		}
		r = append(r, c)
	}
	return string(utf16.Decode(r))
}

// MarshalText encodes the decoded string.
func (u UTF16) MarshalText() ([]byte, error) { return []byte(u.String()), nil }
