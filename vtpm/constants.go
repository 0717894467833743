package vtpm

// Constants from TPM 2.0 Library, Part 2 (Structures), rev 1.59. They keep
// their spec spelling in comments so that a reader can grep the spec.

// Structure tags (TPM_ST), Part 2 section 6.9.
const (
	stRspCommand    = 0x00C4 // TPM_ST_RSP_COMMAND
	stNull          = 0x8000 // TPM_ST_NULL
	stNoSessions    = 0x8001 // TPM_ST_NO_SESSIONS
	stSessions      = 0x8002 // TPM_ST_SESSIONS
	stAttestCertify = 0x8017 // TPM_ST_ATTEST_CERTIFY
	stAttestQuote   = 0x8018 // TPM_ST_ATTEST_QUOTE
	stCreation      = 0x8021 // TPM_ST_CREATION
	stVerified      = 0x8022 // TPM_ST_VERIFIED
	stHashCheck     = 0x8024 // TPM_ST_HASHCHECK
)

// Startup types (TPM_SU), Part 2 section 6.5.
const (
	suClear = 0x0000
	suState = 0x0001
)

// Response codes (TPM_RC), Part 2 section 6.6.
const (
	rcSuccess = 0x000
	rcBadTag  = 0x01E

	rcVer1 = 0x100

	rcInitialize      = rcVer1 + 0x000
	rcFailure         = rcVer1 + 0x001
	rcSequence        = rcVer1 + 0x003
	rcDisabled        = rcVer1 + 0x020
	rcExclusive       = rcVer1 + 0x021
	rcAuthType        = rcVer1 + 0x024
	rcAuthMissing     = rcVer1 + 0x025
	rcPolicy          = rcVer1 + 0x026
	rcPCR             = rcVer1 + 0x027
	rcPCRChanged      = rcVer1 + 0x028
	rcTooManyContexts = rcVer1 + 0x02E
	rcAuthUnavailable = rcVer1 + 0x02F
	rcReboot          = rcVer1 + 0x030
	rcCommandSize     = rcVer1 + 0x042
	rcCommandCode     = rcVer1 + 0x043
	rcAuthSize        = rcVer1 + 0x044
	rcAuthContext     = rcVer1 + 0x045
	rcNVRange         = rcVer1 + 0x046
	rcNVSize          = rcVer1 + 0x047
	rcNVLocked        = rcVer1 + 0x048
	rcNVAuthorization = rcVer1 + 0x049
	rcNVUninitialized = rcVer1 + 0x04A
	rcNVSpace         = rcVer1 + 0x04B
	rcNVDefined       = rcVer1 + 0x04C
	rcBadContext      = rcVer1 + 0x050
	rcParent          = rcVer1 + 0x052
	rcSensitive       = rcVer1 + 0x055

	rcFmt1 = 0x080

	rcAsymmetric   = rcFmt1 + 0x001
	rcAttributes   = rcFmt1 + 0x002
	rcHash         = rcFmt1 + 0x003
	rcValue        = rcFmt1 + 0x004
	rcHierarchy    = rcFmt1 + 0x005
	rcKeySize      = rcFmt1 + 0x007
	rcMGF          = rcFmt1 + 0x008
	rcMode         = rcFmt1 + 0x009
	rcType         = rcFmt1 + 0x00A
	rcHandle       = rcFmt1 + 0x00B
	rcKDF          = rcFmt1 + 0x00C
	rcRange        = rcFmt1 + 0x00D
	rcAuthFail     = rcFmt1 + 0x00E
	rcNonce        = rcFmt1 + 0x00F
	rcPP           = rcFmt1 + 0x010
	rcScheme       = rcFmt1 + 0x012
	rcSize         = rcFmt1 + 0x015
	rcSymmetric    = rcFmt1 + 0x016
	rcTag          = rcFmt1 + 0x017
	rcSelector     = rcFmt1 + 0x018
	rcInsufficient = rcFmt1 + 0x01A
	rcSignature    = rcFmt1 + 0x01B
	rcKey          = rcFmt1 + 0x01C
	rcPolicyFail   = rcFmt1 + 0x01D
	rcIntegrity    = rcFmt1 + 0x01F
	rcTicket       = rcFmt1 + 0x020
	rcReservedBits = rcFmt1 + 0x021
	rcBadAuth      = rcFmt1 + 0x022
	rcExpired      = rcFmt1 + 0x023
	rcPolicyCC     = rcFmt1 + 0x024
	rcBinding      = rcFmt1 + 0x025
	rcCurve        = rcFmt1 + 0x026
	rcECCPoint     = rcFmt1 + 0x027

	rcWarn = 0x900

	rcContextGap     = rcWarn + 0x001
	rcObjectMemory   = rcWarn + 0x002
	rcSessionMemory  = rcWarn + 0x003
	rcMemory         = rcWarn + 0x004
	rcSessionHandles = rcWarn + 0x005
	rcObjectHandles  = rcWarn + 0x006
	rcLocality       = rcWarn + 0x007
	rcNVUnavailable  = rcWarn + 0x023

	// Format-one qualifiers.
	rcH = 0x000 // handle number follows
	rcP = 0x040 // parameter number follows
	rcS = 0x800 // session number follows
	rcN = 0x100 // TPM_RC_1
)

// Command codes (TPM_CC), Part 2 section 6.5.2.
const (
	ccNVUndefineSpaceSpecial    = 0x11F
	ccEvictControl              = 0x120
	ccHierarchyControl          = 0x121
	ccNVUndefineSpace           = 0x122
	ccChangeEPS                 = 0x124
	ccChangePPS                 = 0x125
	ccClear                     = 0x126
	ccClearControl              = 0x127
	ccClockSet                  = 0x128
	ccHierarchyChangeAuth       = 0x129
	ccNVDefineSpace             = 0x12A
	ccPCRAllocate               = 0x12B
	ccCreatePrimary             = 0x131
	ccNVGlobalWriteLock         = 0x132
	ccNVIncrement               = 0x134
	ccNVSetBits                 = 0x135
	ccNVExtend                  = 0x136
	ccNVWrite                   = 0x137
	ccNVWriteLock               = 0x138
	ccDictionaryAttackLockReset = 0x139
	ccPCREvent                  = 0x13C
	ccPCRReset                  = 0x13D
	ccSelfTest                  = 0x143
	ccStartup                   = 0x144
	ccShutdown                  = 0x145
	ccStirRandom                = 0x146
	ccCertify                   = 0x148
	ccNVRead                    = 0x14E
	ccNVReadLock                = 0x14F
	ccObjectChangeAuth          = 0x150
	ccPolicySecret              = 0x151
	ccCreate                    = 0x153
	ccLoad                      = 0x157
	ccQuote                     = 0x158
	ccSign                      = 0x15D
	ccUnseal                    = 0x15E
	ccContextLoad               = 0x161
	ccContextSave               = 0x162
	ccFlushContext              = 0x165
	ccLoadExternal              = 0x167
	ccNVReadPublic              = 0x169
	ccReadPublic                = 0x173
	ccStartAuthSession          = 0x176
	ccVerifySignature           = 0x177
	ccGetCapability             = 0x17A
	ccGetRandom                 = 0x17B
	ccGetTestResult             = 0x17C
	ccHash                      = 0x17D
	ccPCRRead                   = 0x17E
	ccPolicyPCR                 = 0x17F
	ccReadClock                 = 0x181
	ccPCRExtend                 = 0x182
	ccPolicyGetDigest           = 0x189
	ccTestParms                 = 0x18A
)

// Algorithm identifiers (TPM_ALG_ID), Part 2 section 6.3.
const (
	algRSA           = 0x0001
	algSHA1          = 0x0004
	algHMAC          = 0x0005
	algMGF1          = 0x0007
	algXOR           = 0x000A
	algKDF2          = 0x0021
	algAES           = 0x0006
	algKeyedHash     = 0x0008
	algSHA256        = 0x000B
	algSHA384        = 0x000C
	algSHA512        = 0x000D
	algNull          = 0x0010
	algRSASSA        = 0x0014
	algRSAES         = 0x0015
	algRSAPSS        = 0x0016
	algOAEP          = 0x0017
	algECDSA         = 0x0018
	algECDH          = 0x0019
	algKDF1SP800_56A = 0x0020
	algKDF1SP800_108 = 0x0022
	algECC           = 0x0023
	algSymCipher     = 0x0025
	algCTR           = 0x0040
	algOFB           = 0x0041
	algCBC           = 0x0042
	algCFB           = 0x0043
	algECB           = 0x0044
)

// ECC curves (TPM_ECC_CURVE), Part 2 section 6.4.
const (
	curveNISTP256 = 0x0003
	curveNISTP384 = 0x0004
)

// Handles, Part 2 section 7.
const (
	htPCR           = 0x00
	htNVIndex       = 0x01
	htHMACSession   = 0x02
	htPolicySession = 0x03
	htPermanent     = 0x40
	htTransient     = 0x80
	htPersistent    = 0x81

	rhOwner       = 0x40000001
	rsPW          = 0x40000009
	rhLockout     = 0x4000000A
	rhEndorsement = 0x4000000B
	rhPlatform    = 0x4000000C
	rhPlatformNV  = 0x4000000D
	rhNull        = 0x40000007

	transientFirst          = 0x80000000
	persistentFirst         = 0x81000000
	persistentOwnerLast     = 0x817FFFFF
	persistentPlatformFirst = 0x81800000
	persistentLast          = 0x81FFFFFF
	nvIndexFirst            = 0x01000000
	nvIndexLast             = 0x01FFFFFF
	policySessionFirst      = 0x03000000
	hmacSessionFirst        = 0x02000000
)

// Capabilities (TPM_CAP), Part 2 section 6.12.
const (
	capAlgs          = 0x00000000
	capHandles       = 0x00000001
	capCommands      = 0x00000002
	capPPCommands    = 0x00000003
	capAuditCommands = 0x00000004
	capPCRs          = 0x00000005
	capTPMProperties = 0x00000006
	capPCRProperties = 0x00000007
	capECCCurves     = 0x00000008
)

// TPM_GENERATED_VALUE, Part 2 section 6.2.
const generatedValue = 0xff544347

// Implementation limits. They follow the reference implementation where a
// client might depend on them.
const (
	maxCommandSize     = 4096
	maxResponseSize    = 4096
	maxDigestSize      = 64
	maxNVBufferSize    = 1024
	maxNVIndexSize     = 2048
	maxDigestBuffer    = 1024
	maxSymData         = 128
	maxContextSize     = 2048
	numPCRs            = 24
	pcrSelectMin       = 3
	maxLoadedObjects   = 16
	maxPersistent      = 64
	maxNVIndices       = 64
	nvMemory           = 64 << 10
	maxSessions        = 16
	maxCapBuffer       = 1024
	maxRSAPrimaryCache = 16
)
