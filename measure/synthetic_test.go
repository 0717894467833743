package measure

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/shieldvm/shieldvm/internal/sm3"
)

// logBuilder writes crypto-agile logs for tests of what the shared corpus
// does not hold: other banks, H-CRTM, malformed headers.
type logBuilder struct {
	banks []BankSpec
	buf   bytes.Buffer
}

func newAgileLog(banks ...BankSpec) *logBuilder {
	b := &logBuilder{banks: banks}
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	binary.Write(&spec, binary.LittleEndian, uint32(0)) // platform class
	spec.Write([]byte{0, 2, 0, 2})                      // minor, major, errata, uintn size
	binary.Write(&spec, binary.LittleEndian, uint32(len(banks)))
	for _, bk := range banks {
		binary.Write(&spec, binary.LittleEndian, uint16(bk.Alg))
		binary.Write(&spec, binary.LittleEndian, uint16(bk.Size))
	}
	spec.WriteByte(0) // vendor info size
	binary.Write(&b.buf, binary.LittleEndian, uint32(0))
	binary.Write(&b.buf, binary.LittleEndian, uint32(EV_NO_ACTION))
	b.buf.Write(make([]byte, 20))
	binary.Write(&b.buf, binary.LittleEndian, uint32(spec.Len()))
	b.buf.Write(spec.Bytes())
	return b
}

// event appends an event whose digest in every bank is a function of data
// (the digest of data for known algorithms, repeated bytes otherwise).
func (b *logBuilder) event(reg uint32, typ EventType, data []byte) *logBuilder {
	binary.Write(&b.buf, binary.LittleEndian, reg)
	binary.Write(&b.buf, binary.LittleEndian, uint32(typ))
	binary.Write(&b.buf, binary.LittleEndian, uint32(len(b.banks)))
	for _, bk := range b.banks {
		binary.Write(&b.buf, binary.LittleEndian, uint16(bk.Alg))
		if typ == EV_NO_ACTION {
			b.buf.Write(make([]byte, bk.Size))
		} else if d, ok := bk.Alg.Sum(data); ok {
			b.buf.Write(d[:bk.Size])
		} else {
			b.buf.Write(bytes.Repeat([]byte{byte(len(data))}, bk.Size))
		}
	}
	binary.Write(&b.buf, binary.LittleEndian, uint32(len(data)))
	b.buf.Write(data)
	return b
}

func (b *logBuilder) bytes() []byte { return bytes.Clone(b.buf.Bytes()) }

// TestAllBanks: SHA-512 and SM3-256 banks replay; an algorithm this package
// does not know is carried with its declared size, not rejected.
func TestAllBanks(t *testing.T) {
	unknown := HashAlg(0x0099)
	data := newAgileLog(BankSpec{SHA512, 64}, BankSpec{SM3_256, 32}, BankSpec{unknown, 24}).
		event(4, EV_EFI_ACTION, []byte("one")).
		event(4, EV_EFI_ACTION, []byte("two")).bytes()
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	regs, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	if len(regs.Unreplayable) != 1 || regs.Unreplayable[0] != unknown {
		t.Fatalf("unreplayable = %v", regs.Unreplayable)
	}
	d, ok := l.UnverifiedEvents()[1].Digest(unknown)
	if !ok || len(d) != 24 {
		t.Fatalf("unknown-algorithm digest not carried: %x", d)
	}
	// Expected values, computed here with the hash functions directly.
	want512 := make([]byte, 64)
	wantSM3 := make([]byte, 32)
	for _, s := range []string{"one", "two"} {
		h := sha512.Sum512([]byte(s))
		x := sha512.Sum512(append(want512, h[:]...))
		want512 = x[:]
		hs := sm3.Sum([]byte(s))
		y := sm3.Sum(append(wantSM3, hs[:]...))
		wantSM3 = y[:]
	}
	if got := regs.Bank(SHA512).Value(4); !bytes.Equal(got, want512) {
		t.Errorf("sha512[4] = %x, want %x", got, want512)
	}
	if got := regs.Bank(SM3_256).Value(4); !bytes.Equal(got, wantSM3) {
		t.Errorf("sm3_256[4] = %x, want %x", got, wantSM3)
	}
	// Verification uses the banks it can compute and ignores the other.
	q := QuotedValues{SM3_256: {4: wantSM3}, unknown: {4: bytes.Repeat([]byte{1}, 24)}}
	v, err := l.Verify(q, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verified(4) || v.NumEvents() != 2 {
		t.Fatalf("verified(4) = %v, %d events", v.Verified(4), v.NumEvents())
	}
}

// TestInitialValues: PCRs 17-22 start at all ones, the others at zero; a
// StartupLocality event sets PCR 0's last byte; an H-CRTM event starts PCR
// 0 at locality 4.
func TestInitialValues(t *testing.T) {
	sha := BankSpec{SHA256, 32}
	l, err := Parse(newAgileLog(sha).event(17, EV_EFI_ACTION, []byte("x")).event(0, EV_POST_CODE, []byte("y")).bytes())
	if err != nil {
		t.Fatal(err)
	}
	regs, _ := l.Replay()
	b := regs.Bank(SHA256)
	if !bytes.Equal(b.Value(18), bytes.Repeat([]byte{0xFF}, 32)) || !bytes.Equal(b.Value(23), make([]byte, 32)) {
		t.Fatalf("PCR 18 = %x, PCR 23 = %x", b.Value(18), b.Value(23))
	}
	want := func(init byte, data string) []byte {
		reg := make([]byte, 32)
		reg[31] = init
		d, _ := SHA256.Sum([]byte(data))
		extend(SHA256, reg, d[:32])
		return reg
	}
	for _, tc := range []struct {
		name string
		log  []byte
		init byte
	}{
		{"plain", newAgileLog(sha).event(0, EV_POST_CODE, []byte("y")).bytes(), 0},
		{"locality 3", newAgileLog(sha).event(0, EV_NO_ACTION, []byte("StartupLocality\x00\x03")).event(0, EV_POST_CODE, []byte("y")).bytes(), 3},
		{"h-crtm", newAgileLog(sha).event(0, EV_EFI_HCRTM_EVENT, []byte("y")).bytes(), 4},
	} {
		l, err := Parse(tc.log)
		if err != nil {
			t.Fatal(err)
		}
		regs, err := l.Replay()
		if err != nil {
			t.Fatal(err)
		}
		if got, w := regs.Bank(SHA256).Value(0), want(tc.init, "y"); !bytes.Equal(got, w) {
			t.Errorf("%s: PCR 0 = %x, want %x", tc.name, got, w)
		}
	}
}

// TestLateLocalityRejected: a StartupLocality or H-CRTM event after PCR 0
// was extended would rewrite history; the replay refuses it.
func TestLateLocalityRejected(t *testing.T) {
	sha := BankSpec{SHA256, 32}
	for name, data := range map[string][]byte{
		"locality": newAgileLog(sha).event(0, EV_POST_CODE, []byte("y")).event(0, EV_NO_ACTION, []byte("StartupLocality\x00\x03")).bytes(),
		"h-crtm":   newAgileLog(sha).event(0, EV_POST_CODE, []byte("y")).event(0, EV_EFI_HCRTM_EVENT, []byte("z")).bytes(),
		"twice":    newAgileLog(sha).event(0, EV_NO_ACTION, []byte("StartupLocality\x00\x03")).event(0, EV_NO_ACTION, []byte("StartupLocality\x00\x00")).bytes(),
	} {
		l, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		var re *ReplayError
		if _, err := l.Replay(); !errors.As(err, &re) {
			t.Errorf("%s: err = %v, want a ReplayError", name, err)
		}
	}
}

// TestMalformedHeadersRejected: each malformed field is an error that names
// the event and the offset.
func TestMalformedHeadersRejected(t *testing.T) {
	sha := BankSpec{SHA256, 32}
	good := newAgileLog(sha, BankSpec{SHA1, 20}).event(4, EV_EFI_ACTION, []byte("a")).bytes()
	specSize := int(binary.LittleEndian.Uint32(good[28:]))
	ev1 := 32 + specSize
	mutate := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
		off  int
	}{
		{"digest count", mutate(func(b []byte) { b[ev1+8] = 3 }), ErrMalformed, ev1 + 8},
		{"undeclared algorithm", mutate(func(b []byte) { b[ev1+12] = 0x0D }), ErrMalformed, ev1 + 12},
		{"duplicate algorithm", mutate(func(b []byte) { b[ev1+12+2+32] = 0x0B }), ErrMalformed, ev1 + 12 + 2 + 32},
		{"huge data size", mutate(func(b []byte) { binary.LittleEndian.PutUint32(b[ev1+12+34+22:], 0xFFFFFFFF) }), ErrLimit, ev1 + 12 + 34 + 22},
		{"data past the end", mutate(func(b []byte) { binary.LittleEndian.PutUint32(b[ev1+12+34+22:], 1000) }), ErrTruncated, ev1 + 12 + 34 + 22},
		{"truncated header", good[:ev1+5], ErrTruncated, ev1},
		{"wrong digest size for sha256", mutate(func(b []byte) { b[32+30] = 20 }), ErrMalformed, 32 + 30},
		{"no algorithm", mutate(func(b []byte) { b[32+24] = 0 }), ErrMalformed, 32 + 24},
		{"too many algorithms", mutate(func(b []byte) { b[32+24] = 200 }), ErrLimit, 32 + 24},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			var pe *ParseError
			if !errors.As(err, &pe) || !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want a ParseError wrapping %v", err, tc.want)
			}
			if pe.Offset != tc.off {
				t.Errorf("offset = %d, want %d (%v)", pe.Offset, tc.off, err)
			}
		})
	}
}

// TestRegisterOutOfRangeRejected: an event for a register that does not
// exist is an error, not an index out of range.
func TestRegisterOutOfRangeRejected(t *testing.T) {
	data := newAgileLog(BankSpec{SHA384, 48}).event(5, EV_EFI_ACTION, []byte("x")).bytes()
	if _, err := ParseCCEL(data); err != nil {
		t.Fatal(err)
	}
	l, _ := ParseCCEL(data)
	if _, err := l.Replay(); err == nil {
		t.Fatal("CC register 5 accepted")
	}
	data = newAgileLog(BankSpec{SHA384, 48}).event(24, EV_EFI_ACTION, []byte("x")).bytes()
	l, _ = Parse(data)
	if _, err := l.Replay(); err == nil {
		t.Fatal("PCR 24 accepted")
	}
}

// TestPadding: 0xFF and 0x00 filler after the last event ends the log;
// filler with anything else in it is an error, so nothing hides there.
func TestPadding(t *testing.T) {
	good := newAgileLog(BankSpec{SHA256, 32}).event(4, EV_EFI_ACTION, []byte("a")).bytes()
	for _, fill := range []byte{0xFF, 0x00} {
		l, err := Parse(append(bytes.Clone(good), bytes.Repeat([]byte{fill}, 5000)...))
		if err != nil || !l.Padded || l.Size != len(good) || l.NumEvents() != 2 {
			t.Fatalf("fill %#x: %v", fill, err)
		}
		evil := append(bytes.Clone(good), bytes.Repeat([]byte{fill}, 5000)...)
		evil[len(evil)-1] = 0x42
		if _, err := Parse(evil); err == nil {
			t.Fatalf("fill %#x with a byte hidden at its end accepted", fill)
		}
	}
}

// TestSpecIDEvent00IsTPM12: a SHA-1 log that opens with the TPM 1.2 EFI
// Spec ID event is reported as a TPM 1.2 log.
func TestSpecIDEvent00IsTPM12(t *testing.T) {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, [2]uint32{0, uint32(EV_NO_ACTION)})
	b.Write(make([]byte, 20))
	data := append([]byte("Spec ID Event00\x00"), 0, 0, 0, 0, 2, 1, 0, 2, 0)
	binary.Write(&b, binary.LittleEndian, uint32(len(data)))
	b.Write(data)
	l, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if l.Format != FormatTPM12 {
		t.Fatalf("format = %v", l.Format)
	}
}

// TestTPM12Log: the SHA-1 log of a real TPM 1.2 machine (no Spec ID event:
// BIOS-era logs carry none, so it parses as a SHA-1 log) replays to the PCR
// values that machine read.
func TestTPM12Log(t *testing.T) {
	j, err := os.ReadFile("testdata/quotes/linux_tpm12.json")
	if err != nil {
		t.Fatal(err)
	}
	var q windowsQuote // the same go-attestation layout
	if err := json.Unmarshal(j, &q); err != nil {
		t.Fatal(err)
	}
	l, err := Parse(q.Log.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if l.Format != FormatSHA1Legacy || l.SpecID != nil {
		t.Fatalf("format %v, spec %v", l.Format, l.SpecID)
	}
	quoted := QuotedValues{SHA1: {}}
	for _, p := range q.Log.PCRs {
		quoted[SHA1][p.Index] = p.Digest
	}
	v, err := l.Verify(quoted, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.NumEvents() == 0 {
		t.Fatal("nothing verified")
	}
	t.Logf("%d events, PCR 0 %s", l.NumEvents(), hex.EncodeToString(quoted[SHA1][0]))
}

// TestEventMissingABank: an event that lacks the digest of a declared bank
// parses (real firmware has been seen to omit inactive banks), and a quote
// of that bank then does not match: the bank's events are never verified.
func TestEventMissingABank(t *testing.T) {
	b := newAgileLog(BankSpec{SHA256, 32}, BankSpec{SHA1, 20}).event(4, EV_EFI_ACTION, []byte("a"))
	// An event with the SHA-256 digest only.
	d, _ := SHA256.Sum([]byte("b"))
	binary.Write(&b.buf, binary.LittleEndian, [3]uint32{4, uint32(EV_EFI_ACTION), 1})
	binary.Write(&b.buf, binary.LittleEndian, uint16(SHA256))
	b.buf.Write(d[:32])
	binary.Write(&b.buf, binary.LittleEndian, uint32(1))
	b.buf.WriteByte('b')
	l, err := Parse(b.bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := len(l.UnverifiedEvents()[2].Digests()); got != 1 {
		t.Fatalf("%d digests", got)
	}
	// What a TPM extending both banks would quote.
	tpm := newAgileLog(BankSpec{SHA256, 32}, BankSpec{SHA1, 20}).event(4, EV_EFI_ACTION, []byte("a")).event(4, EV_EFI_ACTION, []byte("b")).bytes()
	tl, _ := Parse(tpm)
	q := quotedFromReplay(t, tl)
	v, err := l.Verify(q, VerifyOptions{})
	var me *MismatchError
	if !errors.As(err, &me) || len(me.Report.Mismatches()) != 1 || me.Report.Mismatches()[0].Alg != SHA1 {
		t.Fatalf("err = %v, want a SHA-1 mismatch", err)
	}
	if v.Verified(4) {
		t.Fatal("PCR 4 verified although its SHA-1 bank does not match")
	}
}

// TestSHA1LogFirstEventVerified: in a SHA-1 log the first event is an
// ordinary measurement, so a one-event log must verify against its
// register, and a forged quote of that register must fail; skipping event
// 0 would let a log that extends PCR 0 once claim any PCR 0 value.
func TestSHA1LogFirstEventVerified(t *testing.T) {
	raw := buildSHA1Log([]legacyEvent{{pcr: 0, typ: EV_S_CRTM_VERSION, data: []byte("1.0\x00")}})
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	d := sha1.Sum([]byte("1.0\x00"))
	want := make([]byte, 20)
	extend(SHA1, want, d[:])
	v, err := l.Verify(QuotedValues{SHA1: {0: want}}, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := len(v.Events()); got != 1 {
		t.Errorf("verified events = %d, want 1", got)
	}
	forged := make([]byte, 20)
	forged[0] = 1
	if _, err := l.Verify(QuotedValues{SHA1: {0: forged}}, VerifyOptions{}); !errors.Is(err, ErrMismatch) {
		t.Errorf("Verify with a forged PCR 0: %v, want ErrMismatch", err)
	}
}
