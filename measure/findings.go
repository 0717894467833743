package measure

import "fmt"

// FindingKind names a structural defect of a verified log. Findings are
// facts about the log's shape, not errors: a log with findings still
// yields facts, and a policy decides what each finding means.
type FindingKind string

// The kinds of [Finding].
const (
	// FindingDataMismatch: an event whose digest the specification
	// defines as the digest of its data (a UEFI variable, an EFI action
	// string, a separator, a Windows SIPA event, a GRUB command) has data
	// that does not hash to it. Nothing is taken from such data.
	FindingDataMismatch FindingKind = "data-mismatch"
	// FindingDecodeError: an event's data does not decode as its type
	// says.
	FindingDecodeError FindingKind = "decode-error"
	// FindingEventAfterSeparator: an event in a PC Client register (PCRs
	// 0-7, or RTMR0-1 of a TDX log) after that register's separator, of a
	// type the PC Client profile does not allow there.
	FindingEventAfterSeparator FindingKind = "event-after-separator"
	// FindingDuplicateSeparator: a register with a second separator.
	FindingDuplicateSeparator FindingKind = "duplicate-separator"
	// FindingMissingSeparator: a firmware register (PCRs 0-7, RTMR0-1)
	// with no separator in a log whose boot reached the OS loader.
	FindingMissingSeparator FindingKind = "missing-separator"
	// FindingErrorSeparator: a separator with the error value 1, which
	// firmware writes when it could not measure something.
	FindingErrorSeparator FindingKind = "error-separator"
	// FindingConflictingValues: a setting measured more than once with
	// different values; the fact keeps the weaker or the first value and
	// names every event.
	FindingConflictingValues FindingKind = "conflicting-values"
)

// Finding is one structural defect of a log, with the events it concerns.
type Finding struct {
	Kind     FindingKind `json:"kind"`
	Register uint32      `json:"register"`
	Events   []int       `json:"events"`
	Message  string      `json:"message"`
}

// String describes the finding in one line.
func (f Finding) String() string {
	return fmt.Sprintf("%s: register %d, events %v: %s", f.Kind, f.Register, f.Events, f.Message)
}

// allowedAfterSeparator reports whether the PC Client profile allows an
// event of type t in a firmware register after its separator: boot
// applications, EFI actions and the GPT come after the OS loader is
// called; drivers and authorities as images load.
func allowedAfterSeparator(kind RegisterKind, reg uint32, t EventType) bool {
	if kind == CCMR {
		switch reg {
		case 1:
			// RTMR0 takes PCRs 1 and 7: its separator is PCR 7's, written
			// after the Secure Boot configuration, and PCR 1's
			// configuration events rightly follow it.
			switch t {
			case EV_PLATFORM_CONFIG_FLAGS, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_CPU_MICROCODE, EV_TABLE_OF_DEVICES, EV_NONHOST_CONFIG, EV_EFI_ACTION:
				return true
			}
			return allowedAfterSeparator(PCR, 1, t) || allowedAfterSeparator(PCR, 7, t)
		case 2: // RTMR1: PCRs 2-6
			return allowedAfterSeparator(PCR, 2, t) || allowedAfterSeparator(PCR, 4, t) || allowedAfterSeparator(PCR, 5, t)
		}
		return true
	}
	switch reg {
	case 1:
		return t == EV_EFI_HANDOFF_TABLES || t == EV_EFI_HANDOFF_TABLES2 || t == EV_EFI_VARIABLE_BOOT || t == EV_EFI_VARIABLE_BOOT2
	case 2:
		return t == EV_EFI_BOOT_SERVICES_DRIVER || t == EV_EFI_RUNTIME_SERVICES_DRIVER
	case 4:
		return t == EV_EFI_BOOT_SERVICES_APPLICATION || t == EV_EFI_BOOT_SERVICES_DRIVER || t == EV_EFI_ACTION || t == EV_IPL
	case 5:
		return t == EV_EFI_GPT_EVENT || t == EV_EFI_GPT_EVENT2 || t == EV_EFI_ACTION
	case 7:
		return t == EV_EFI_VARIABLE_AUTHORITY || t == EV_EFI_SPDM_DEVICE_AUTHORITY
	}
	return false
}

// firmwareRegister reports whether firmware writes a separator into reg.
func firmwareRegister(kind RegisterKind, reg uint32) bool {
	if kind == CCMR {
		return reg == 1 || reg == 2
	}
	return reg <= 7
}
