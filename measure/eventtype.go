package measure

import "fmt"

// EventType is the type of an event (TCG PC Client Platform Firmware Profile,
// version 1.05, section 10.4.1). It is chosen by the firmware or OS that
// logged the event and is not measured: never trust the type of an event
// whose register was not verified.
type EventType uint32

// Event types of the PC Client Platform Firmware Profile.
const (
	EV_PREBOOT_CERT            EventType = 0x00000000
	EV_POST_CODE               EventType = 0x00000001
	EV_UNUSED                  EventType = 0x00000002
	EV_NO_ACTION               EventType = 0x00000003
	EV_SEPARATOR               EventType = 0x00000004
	EV_ACTION                  EventType = 0x00000005
	EV_EVENT_TAG               EventType = 0x00000006
	EV_S_CRTM_CONTENTS         EventType = 0x00000007
	EV_S_CRTM_VERSION          EventType = 0x00000008
	EV_CPU_MICROCODE           EventType = 0x00000009
	EV_PLATFORM_CONFIG_FLAGS   EventType = 0x0000000A
	EV_TABLE_OF_DEVICES        EventType = 0x0000000B
	EV_COMPACT_HASH            EventType = 0x0000000C
	EV_IPL                     EventType = 0x0000000D
	EV_IPL_PARTITION_DATA      EventType = 0x0000000E
	EV_NONHOST_CODE            EventType = 0x0000000F
	EV_NONHOST_CONFIG          EventType = 0x00000010
	EV_NONHOST_INFO            EventType = 0x00000011
	EV_OMIT_BOOT_DEVICE_EVENTS EventType = 0x00000012
	EV_POST_CODE2              EventType = 0x00000013

	EV_EFI_EVENT_BASE                EventType = 0x80000000
	EV_EFI_VARIABLE_DRIVER_CONFIG    EventType = 0x80000001
	EV_EFI_VARIABLE_BOOT             EventType = 0x80000002
	EV_EFI_BOOT_SERVICES_APPLICATION EventType = 0x80000003
	EV_EFI_BOOT_SERVICES_DRIVER      EventType = 0x80000004
	EV_EFI_RUNTIME_SERVICES_DRIVER   EventType = 0x80000005
	EV_EFI_GPT_EVENT                 EventType = 0x80000006
	EV_EFI_ACTION                    EventType = 0x80000007
	EV_EFI_PLATFORM_FIRMWARE_BLOB    EventType = 0x80000008
	EV_EFI_HANDOFF_TABLES            EventType = 0x80000009
	EV_EFI_PLATFORM_FIRMWARE_BLOB2   EventType = 0x8000000A
	EV_EFI_HANDOFF_TABLES2           EventType = 0x8000000B
	EV_EFI_VARIABLE_BOOT2            EventType = 0x8000000C
	EV_EFI_GPT_EVENT2                EventType = 0x8000000D
	EV_EFI_HCRTM_EVENT               EventType = 0x80000010
	EV_EFI_VARIABLE_AUTHORITY        EventType = 0x800000E0
	EV_EFI_SPDM_FIRMWARE_BLOB        EventType = 0x800000E1
	EV_EFI_SPDM_FIRMWARE_CONFIG      EventType = 0x800000E2
	EV_EFI_SPDM_DEVICE_POLICY        EventType = 0x800000E3
	EV_EFI_SPDM_DEVICE_AUTHORITY     EventType = 0x800000E4
)

var eventTypeNames = map[EventType]string{
	EV_PREBOOT_CERT:                  "EV_PREBOOT_CERT",
	EV_POST_CODE:                     "EV_POST_CODE",
	EV_UNUSED:                        "EV_UNUSED",
	EV_NO_ACTION:                     "EV_NO_ACTION",
	EV_SEPARATOR:                     "EV_SEPARATOR",
	EV_ACTION:                        "EV_ACTION",
	EV_EVENT_TAG:                     "EV_EVENT_TAG",
	EV_S_CRTM_CONTENTS:               "EV_S_CRTM_CONTENTS",
	EV_S_CRTM_VERSION:                "EV_S_CRTM_VERSION",
	EV_CPU_MICROCODE:                 "EV_CPU_MICROCODE",
	EV_PLATFORM_CONFIG_FLAGS:         "EV_PLATFORM_CONFIG_FLAGS",
	EV_TABLE_OF_DEVICES:              "EV_TABLE_OF_DEVICES",
	EV_COMPACT_HASH:                  "EV_COMPACT_HASH",
	EV_IPL:                           "EV_IPL",
	EV_IPL_PARTITION_DATA:            "EV_IPL_PARTITION_DATA",
	EV_NONHOST_CODE:                  "EV_NONHOST_CODE",
	EV_NONHOST_CONFIG:                "EV_NONHOST_CONFIG",
	EV_NONHOST_INFO:                  "EV_NONHOST_INFO",
	EV_OMIT_BOOT_DEVICE_EVENTS:       "EV_OMIT_BOOT_DEVICE_EVENTS",
	EV_POST_CODE2:                    "EV_POST_CODE2",
	EV_EFI_EVENT_BASE:                "EV_EFI_EVENT_BASE",
	EV_EFI_VARIABLE_DRIVER_CONFIG:    "EV_EFI_VARIABLE_DRIVER_CONFIG",
	EV_EFI_VARIABLE_BOOT:             "EV_EFI_VARIABLE_BOOT",
	EV_EFI_BOOT_SERVICES_APPLICATION: "EV_EFI_BOOT_SERVICES_APPLICATION",
	EV_EFI_BOOT_SERVICES_DRIVER:      "EV_EFI_BOOT_SERVICES_DRIVER",
	EV_EFI_RUNTIME_SERVICES_DRIVER:   "EV_EFI_RUNTIME_SERVICES_DRIVER",
	EV_EFI_GPT_EVENT:                 "EV_EFI_GPT_EVENT",
	EV_EFI_ACTION:                    "EV_EFI_ACTION",
	EV_EFI_PLATFORM_FIRMWARE_BLOB:    "EV_EFI_PLATFORM_FIRMWARE_BLOB",
	EV_EFI_HANDOFF_TABLES:            "EV_EFI_HANDOFF_TABLES",
	EV_EFI_PLATFORM_FIRMWARE_BLOB2:   "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
	EV_EFI_HANDOFF_TABLES2:           "EV_EFI_HANDOFF_TABLES2",
	EV_EFI_VARIABLE_BOOT2:            "EV_EFI_VARIABLE_BOOT2",
	EV_EFI_GPT_EVENT2:                "EV_EFI_GPT_EVENT2",
	EV_EFI_HCRTM_EVENT:               "EV_EFI_HCRTM_EVENT",
	EV_EFI_VARIABLE_AUTHORITY:        "EV_EFI_VARIABLE_AUTHORITY",
	EV_EFI_SPDM_FIRMWARE_BLOB:        "EV_EFI_SPDM_FIRMWARE_BLOB",
	EV_EFI_SPDM_FIRMWARE_CONFIG:      "EV_EFI_SPDM_FIRMWARE_CONFIG",
	EV_EFI_SPDM_DEVICE_POLICY:        "EV_EFI_SPDM_DEVICE_POLICY",
	EV_EFI_SPDM_DEVICE_AUTHORITY:     "EV_EFI_SPDM_DEVICE_AUTHORITY",
}

// String returns the spec name of the type ("EV_EFI_ACTION"), or
// "EV_UNKNOWN_0xNNNNNNNN" for a type the profile does not define.
func (t EventType) String() string {
	if s, ok := eventTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("EV_UNKNOWN_0x%08X", uint32(t))
}
