// Package measure parses TCG event logs, replays them into register banks
// and verifies them against values a root of trust signed.
//
// Bytes in, values out: measure does no I/O and checks no signature. The
// caller (package attest) checks the TPM quote or the TDX report, then gives
// the quoted register values to [Log.Verify].
//
// # Formats
//
//   - SHA-1 legacy logs (TCG_PCClientPCREvent), as TPM 2.0 firmware writes
//     for the TCG 1.2 log format, and TPM 1.2 logs ([FormatTPM12] when a
//     "Spec ID Event00" says so; BIOS-era TPM 1.2 logs have no Spec ID event
//     and parse as [FormatSHA1Legacy]).
//   - Crypto-agile logs (Spec ID Event03, TCG_PCR_EVENT2) with every bank
//     the Spec ID event declares: SHA-1, SHA-256, SHA-384, SHA-512, SM3-256,
//     and algorithms this package does not know, whose digests are carried
//     with the size the Spec ID event declares but cannot be replayed.
//   - Intel TDX CCEL logs ([ParseCCEL]): crypto-agile logs whose registers
//     are MRTD and RTMR0-3; the 0xFF filler of the ACPI buffer ends the log.
//
// # The flow
//
//	log, err := measure.Parse(data)          // events alias data; nothing decoded
//	regs, err := log.Replay()                // every bank in one pass (what the log claims)
//	vlog, err := log.Verify(quoted, opts)    // compare with quoted values
//	for _, ev := range vlog.Events() { ... } // only events of matching registers
//
// [Log] and [VerifiedLog] are different types: the events of a Log are what
// the host wrote ([Log.UnverifiedEvents], for display); a VerifiedLog holds
// only events whose registers matched the quoted values, in the prefix of
// the log the quote covers.
//
// # Known firmware defects
//
// Real firmware gets logs wrong in known ways. Each such defect is a named
// [Quirk] that a caller opts into in [VerifyOptions]; verification uses one
// only when the log needs it to match, and [Report.Quirks] says which were
// needed. Nothing is worked around silently.
//
// # Limits and safety
//
// The parser never panics on input and never allocates from a size field:
// every length is checked against the remaining bytes and the limits
// [MaxEvents], [MaxEventDataSize] and [MaxBanks]. Errors are *[ParseError]
// values that name the event index and the byte offset.
//
// Logs, replays and verified logs are immutable once returned and safe for
// concurrent use.
package measure
