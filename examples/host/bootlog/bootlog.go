// Package bootlog replays a real TCG boot event log into a TPM, as firmware
// would have extended it during boot, and edits logs the way a compromised
// boot would change them. It serves the examples: a vtpm standing in for a
// host's TPM is "booted" with a log that real firmware wrote, so the quote
// and the log it carries are as a real host's would be.
//
// Nothing here belongs on a real host: there, the firmware extends the TPM.
package bootlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/shieldvm/shieldvm/measure"
)

// DebugModeAction is the EV_EFI_ACTION string UEFI firmware measures into
// PCR 7 when it runs in debug mode (TCG PC Client Platform Firmware
// Profile, section 10.4.4: "UEFI Debug Mode").
const DebugModeAction = "UEFI Debug Mode"

// Extend extends every measured event of log (all but EV_NO_ACTION) into
// the TPM's PCRs, in every bank the log carries that this package knows.
// The TPM must have those banks allocated (a vtpm has all of them).
func Extend(tpm transport.TPM, log []byte) error {
	l, err := measure.Parse(log)
	if err != nil {
		return fmt.Errorf("bootlog: %w", err)
	}
	for _, e := range l.UnverifiedEvents() {
		if e.Type == measure.EV_NO_ACTION {
			continue
		}
		var ds tpm2.TPMLDigestValues
		for _, d := range e.Digests() {
			if !d.Alg.Known() {
				continue
			}
			ds.Digests = append(ds.Digests, tpm2.TPMTHA{HashAlg: tpm2.TPMIAlgHash(d.Alg), Digest: d.Value})
		}
		if len(ds.Digests) == 0 {
			continue
		}
		if e.Register >= 24 {
			return fmt.Errorf("bootlog: event %d extends register %d", e.Index, e.Register)
		}
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(e.Register), Auth: tpm2.PasswordAuth(nil)},
			Digests:   ds,
		}.Execute(tpm)
		if err != nil {
			return fmt.Errorf("bootlog: extending event %d into PCR %d: %w", e.Index, e.Register, err)
		}
	}
	return nil
}

// InsertBeforeSeparator returns a copy of a crypto-agile log with one more
// event in register pcr, placed just before that register's EV_SEPARATOR
// (where firmware measures its configuration), with the digests of data in
// every bank the log declares. It is how the examples make the log of a
// host booted differently from the known-good one.
func InsertBeforeSeparator(log []byte, pcr uint32, typ measure.EventType, data []byte) ([]byte, error) {
	l, err := measure.Parse(log)
	if err != nil {
		return nil, fmt.Errorf("bootlog: %w", err)
	}
	if l.Format != measure.FormatCryptoAgile || l.SpecID == nil {
		return nil, errors.New("bootlog: only crypto-agile logs can be edited")
	}
	at := -1
	for _, e := range l.UnverifiedEvents() {
		if e.Register == pcr && e.Type == measure.EV_SEPARATOR {
			at = e.Offset
			break
		}
	}
	if at < 0 {
		return nil, fmt.Errorf("bootlog: PCR %d has no separator", pcr)
	}
	le := binary.LittleEndian
	var ev []byte
	ev = le.AppendUint32(ev, pcr)
	ev = le.AppendUint32(ev, uint32(typ))
	ev = le.AppendUint32(ev, uint32(len(l.SpecID.Banks)))
	for _, b := range l.SpecID.Banks {
		sum, ok := b.Alg.Sum(data)
		if !ok || b.Alg.Size() != b.Size {
			return nil, fmt.Errorf("bootlog: cannot hash bank %v", b.Alg)
		}
		ev = le.AppendUint16(ev, uint16(b.Alg))
		ev = append(ev, sum[:b.Alg.Size()]...)
	}
	ev = le.AppendUint32(ev, uint32(len(data)))
	ev = append(ev, data...)
	out := make([]byte, 0, len(log)+len(ev))
	out = append(out, log[:at]...)
	out = append(out, ev...)
	out = append(out, log[at:]...)
	return out, nil
}

// WithDebugMode returns the log of the same boot on firmware in debug mode:
// the "UEFI Debug Mode" action in PCR 7, before its separator.
func WithDebugMode(log []byte) ([]byte, error) {
	return InsertBeforeSeparator(log, 7, measure.EV_EFI_ACTION, []byte(DebugModeAction))
}

// KeepBanks re-encodes a crypto-agile log with only the given banks, in
// the log's order: the log that the same firmware writes on a TPM whose
// other banks are not allocated (for example a host with the SHA-1 bank
// switched off, so that nothing has to be quoted or trusted in SHA-1).
// The events and their digests in the kept banks are unchanged.
func KeepBanks(log []byte, keep ...measure.HashAlg) ([]byte, error) {
	l, err := measure.Parse(log)
	if err != nil {
		return nil, fmt.Errorf("bootlog: %w", err)
	}
	if l.Format != measure.FormatCryptoAgile || l.SpecID == nil {
		return nil, errors.New("bootlog: only crypto-agile logs can be edited")
	}
	var banks []measure.BankSpec
	for _, b := range l.SpecID.Banks {
		if slices.Contains(keep, b.Alg) {
			banks = append(banks, b)
		}
	}
	if len(banks) != len(keep) {
		return nil, fmt.Errorf("bootlog: the log lacks one of the banks %v", keep)
	}
	le := binary.LittleEndian
	// The Spec ID event (PC Client Platform Firmware Profile, section
	// 10.4.5.1), in the SHA-1 event format.
	s := l.SpecID
	var spec []byte
	var sig [16]byte
	copy(sig[:], s.Signature)
	spec = append(spec, sig[:]...)
	spec = le.AppendUint32(spec, s.PlatformClass)
	spec = append(spec, s.VersionMinor, s.VersionMajor, s.Errata, s.UintnSize)
	spec = le.AppendUint32(spec, uint32(len(banks)))
	for _, b := range banks {
		spec = le.AppendUint16(spec, uint16(b.Alg))
		spec = le.AppendUint16(spec, uint16(b.Size))
	}
	if len(s.VendorInfo) > 255 {
		return nil, errors.New("bootlog: vendor info too long")
	}
	spec = append(spec, byte(len(s.VendorInfo)))
	spec = append(spec, s.VendorInfo...)
	var out []byte
	out = le.AppendUint32(out, 0)
	out = le.AppendUint32(out, uint32(measure.EV_NO_ACTION))
	out = append(out, make([]byte, 20)...)
	out = le.AppendUint32(out, uint32(len(spec)))
	out = append(out, spec...)
	for _, e := range l.UnverifiedEvents()[1:] {
		out = le.AppendUint32(out, e.Register)
		out = le.AppendUint32(out, uint32(e.Type))
		out = le.AppendUint32(out, uint32(len(banks)))
		for _, b := range banks {
			d, ok := e.Digest(b.Alg)
			if !ok || len(d) != b.Size {
				return nil, fmt.Errorf("bootlog: event %d has no %v digest", e.Index, b.Alg)
			}
			out = le.AppendUint16(out, uint16(b.Alg))
			out = append(out, d...)
		}
		out = le.AppendUint32(out, uint32(len(e.Data)))
		out = append(out, e.Data...)
	}
	return out, nil
}
