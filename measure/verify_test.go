package measure

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"testing"
)

// quotedFromJSON turns a bank → register → hex map into QuotedValues.
func quotedFromJSON(t testing.TB, banks map[string]map[string]string) QuotedValues {
	t.Helper()
	q := QuotedValues{}
	for algName, regs := range banks {
		alg, err := ParseHashAlg(algName)
		if err != nil {
			t.Fatal(err)
		}
		q[alg] = map[uint32][]byte{}
		for rs, h := range regs {
			r, err := strconv.Atoi(rs)
			if err != nil {
				t.Fatal(err)
			}
			v, err := hex.DecodeString(h)
			if err != nil {
				t.Fatal(err)
			}
			q[alg][uint32(r)] = v
		}
	}
	return q
}

// TestVerifyCorpus verifies every real log against its reference replay:
// every register matches and every extended event is verified.
func TestVerifyCorpus(t *testing.T) {
	for _, c := range loadCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			l := parseCorpus(t, c)
			q := quotedFromJSON(t, c.want.Banks)
			if len(q[SHA1])+len(q[SHA256])+len(q[SHA384]) == 0 {
				if _, err := l.Verify(q, VerifyOptions{}); !errors.Is(err, ErrNothingVerified) {
					t.Fatalf("Verify of a log that extends nothing = %v, want ErrNothingVerified", err)
				}
				return
			}
			v, err := l.Verify(q, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rep := v.Report()
			if rep.Prefix != len(l.UnverifiedEvents()) || rep.Quirks != 0 {
				t.Errorf("prefix %d of %d, quirks %v", rep.Prefix, len(l.UnverifiedEvents()), rep.Quirks)
			}
			extended := 0
			for _, ev := range l.UnverifiedEvents() {
				if ev.Type != EV_NO_ACTION {
					extended++
				}
			}
			got := 0
			for _, ev := range v.Events() {
				if ev.Type != EV_NO_ACTION {
					got++
				}
			}
			if got != extended {
				t.Errorf("%d verified extend events, want %d", got, extended)
			}
			for _, r := range rep.Results {
				if r.Status != Matched {
					t.Errorf("%v[%d]: %v", r.Alg, r.Register, r.Status)
				}
			}
		})
	}
}

func loadLog(t testing.TB, name string) *Log {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// quotedFromReplay returns the replayed values of every extended register,
// as a TPM that logged truthfully would quote them.
func quotedFromReplay(t testing.TB, l *Log) QuotedValues {
	t.Helper()
	regs, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	q := QuotedValues{}
	for _, b := range regs.Banks {
		q[b.Alg] = map[uint32][]byte{}
		for _, r := range b.ExtendedRegisters() {
			q[b.Alg][uint32(r)] = bytes.Clone(b.Value(r))
		}
	}
	return q
}

// TestEBSQuirk: the firmware of ebs_event_missing.bin extended PCR 5 with
// the ExitBootServices events without logging them. With the named quirk,
// the log reaches the TPM's real PCR 5; without it, it does not.
func TestEBSQuirk(t *testing.T) {
	l := loadLog(t, "eventlogs/ebs_event_missing.bin")
	var want replayedJSON
	j, _ := os.ReadFile("testdata/eventlogs/ebs_event_missing.replayed.json")
	if err := json.Unmarshal(j, &want); err != nil {
		t.Fatal(err)
	}
	q := quotedFromJSON(t, want.Banks)
	tpm := quotedFromJSON(t, want.TPMQuoted)
	q[SHA1][5] = tpm[SHA1][5]
	q[SHA256] = tpm[SHA256] // a bank the SHA-1 log does not carry

	v, err := l.Verify(q, VerifyOptions{})
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("without the quirk: err = %v, want a MismatchError", err)
	}
	if m := me.Report.Mismatches(); len(m) != 1 || m[0].Register != 5 {
		t.Fatalf("mismatches = %+v, want PCR 5 alone", m)
	}
	if v.Verified(5) {
		t.Fatal("PCR 5 verified without the quirk")
	}
	for _, ev := range v.Events() {
		if ev.Register == 5 {
			t.Fatalf("event %d of the mismatched PCR 5 presented as verified", ev.Index)
		}
	}
	if !v.Verified(0) || !v.Verified(7) {
		t.Fatal("the registers that matched are not verified")
	}

	v, err = l.Verify(q, VerifyOptions{Quirks: QuirkUnloggedExitBootServices})
	if err != nil {
		t.Fatalf("with the quirk: %v", err)
	}
	if v.Report().Quirks != QuirkUnloggedExitBootServices {
		t.Fatalf("quirks used = %v", v.Report().Quirks)
	}
	if !v.Verified(5) {
		t.Fatal("PCR 5 not verified with the quirk")
	}
	for _, r := range v.Report().Results {
		if r.Alg == SHA256 && r.Status != BankNotInLog {
			t.Errorf("sha256[%d] = %v, want bank-not-in-log", r.Register, r.Status)
		}
	}
}

// TestQuirkNotUsedWhenNotNeeded: allowing a quirk does not apply it to a
// log that matches without it.
func TestQuirkNotUsedWhenNotNeeded(t *testing.T) {
	l := loadLog(t, "eventlogs/ubuntu-2104-no-secure-boot.bin")
	v, err := l.Verify(quotedFromReplay(t, l), VerifyOptions{Quirks: QuirkUnloggedExitBootServices})
	if err != nil {
		t.Fatal(err)
	}
	if v.Report().Quirks != 0 {
		t.Fatalf("quirks used = %v, want none", v.Report().Quirks)
	}
}

// TestLogGrownAfterQuote: a log read after the quote holds events the quote
// does not cover. Verification finds the quoted prefix and leaves the
// events after it unverified.
func TestLogGrownAfterQuote(t *testing.T) {
	data, _ := os.ReadFile("testdata/eventlogs/arch-linux-workstation.bin")
	full, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	evs := full.UnverifiedEvents()
	cut := len(evs) - 5
	early, err := Parse(data[:evs[cut].Offset])
	if err != nil {
		t.Fatal(err)
	}
	v, err := full.Verify(quotedFromReplay(t, early), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Report().Prefix; got != cut {
		t.Fatalf("prefix = %d, want %d", got, cut)
	}
	for _, ev := range v.Events() {
		if ev.Index >= cut {
			t.Fatalf("event %d, logged after the quote, presented as verified", ev.Index)
		}
	}
}

// TestTamperedDigestRejected: one changed byte in an event digest makes its
// register mismatch, and none of that register's events are verified.
func TestTamperedDigestRejected(t *testing.T) {
	data, _ := os.ReadFile("testdata/eventlogs/rhel8-uefi.bin")
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	q := quotedFromReplay(t, l)
	// Change the SHA-256 digest of the last PCR 4 event.
	evil := bytes.Clone(data)
	el, _ := Parse(evil)
	var target *Event
	for i := range el.UnverifiedEvents() {
		if ev := &el.UnverifiedEvents()[i]; ev.Register == 4 && ev.Type != EV_NO_ACTION {
			target = ev
		}
	}
	d, _ := target.Digest(SHA256)
	d[0] ^= 1
	v, err := el.Verify(q, VerifyOptions{})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("err = %v, want ErrMismatch", err)
	}
	if v.Verified(4) {
		t.Fatal("tampered PCR 4 verified")
	}
	for _, ev := range v.Events() {
		if ev.Register == 4 {
			t.Fatal("an event of the tampered register is presented as verified")
		}
	}
}

// TestEventsAddedToLogRejected: an event inserted into the middle of the
// log, where a prefix cannot explain it, is a mismatch.
func TestEventsAddedToLogRejected(t *testing.T) {
	data, _ := os.ReadFile("testdata/eventlogs/debian-10.bin")
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	q := quotedFromReplay(t, l)
	evs := l.UnverifiedEvents()
	// Duplicate event 3 in place.
	e := evs[3]
	end := evs[4].Offset
	evil := append(append(bytes.Clone(data[:end]), data[e.Offset:end]...), data[end:]...)
	el, err := Parse(evil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := el.Verify(q, VerifyOptions{}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("err = %v, want ErrMismatch", err)
	}
}

// windowsQuote is the part of quotes/windows_gcp_shielded_vm.json that
// measure needs (go-attestation's JSON layout).
type windowsQuote struct {
	Log struct {
		PCRs []struct {
			Index     uint32
			Digest    []byte
			DigestAlg int // Go's crypto.Hash: 3 is SHA-1, 5 SHA-256
		}
		Raw []byte
	}
}

// TestWindowsQuotedPCRs: the quoted SHA-1 PCRs of a real Windows Server
// boot match the replay of its measured-boot log (WBCL).
func TestWindowsQuotedPCRs(t *testing.T) {
	j, err := os.ReadFile("testdata/quotes/windows_gcp_shielded_vm.json")
	if err != nil {
		t.Fatal(err)
	}
	var wq windowsQuote
	if err := json.Unmarshal(j, &wq); err != nil {
		t.Fatal(err)
	}
	l, err := Parse(wq.Log.Raw)
	if err != nil {
		t.Fatal(err)
	}
	q := QuotedValues{SHA1: {}}
	for _, p := range wq.Log.PCRs {
		if p.DigestAlg != 3 {
			t.Fatalf("PCR %d: digest alg %d", p.Index, p.DigestAlg)
		}
		q[SHA1][p.Index] = p.Digest
	}
	if len(q[SHA1]) != 24 {
		t.Fatalf("%d quoted PCRs, want 24", len(q[SHA1]))
	}
	v, err := l.Verify(q, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	matched := 0
	for _, r := range v.Report().Results {
		switch r.Status {
		case Matched:
			matched++
		case Absent:
		default:
			t.Errorf("PCR %d: %v", r.Register, r.Status)
		}
	}
	// The log extends PCRs 0, 4, 5, 7 (firmware) and 11-14 (Windows).
	if matched != 8 {
		t.Errorf("%d PCRs matched, want the 8 the log extends", matched)
	}
	if got := len(v.Events()); got != len(l.UnverifiedEvents()) {
		t.Errorf("%d of %d events verified", got, len(l.UnverifiedEvents()))
	}
}

// TestUnquotedBankNotReplayed: a bank without quoted values is listed as
// unquoted and costs no hashing; the quoted bank verifies alone.
func TestUnquotedBankNotReplayed(t *testing.T) {
	l := loadLog(t, "eventlogs/ubuntu-2104-no-secure-boot.bin")
	q := quotedFromReplay(t, l)
	delete(q, SHA1)
	delete(q, SHA384)
	v, err := l.Verify(q, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep := v.Report()
	if len(rep.UnquotedBanks) != 2 || rep.UnquotedBanks[0] != SHA1 || rep.UnquotedBanks[1] != SHA384 {
		t.Fatalf("unquoted banks = %v", rep.UnquotedBanks)
	}
	for _, r := range rep.Results {
		if r.Alg != SHA256 || r.Status != Matched {
			t.Fatalf("%v[%d]: %v", r.Alg, r.Register, r.Status)
		}
	}
	if !v.Verified(4) {
		t.Fatal("PCR 4 not verified by its SHA-256 bank")
	}
}
