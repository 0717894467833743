package measure_test

import (
	"fmt"
	"os"

	"github.com/shieldvm/shieldvm/measure"
)

// A verifier takes facts from a verified log only: the log is compared
// with PCR values a TPM signed, and Facts summarizes the events of the
// registers that matched.
func ExampleVerifiedLog_Facts() {
	data, err := os.ReadFile("testdata/eventlogs/ubuntu-2404-amd-sevsnp.bin")
	if err != nil {
		panic(err)
	}
	l, err := measure.Parse(data)
	if err != nil {
		panic(err)
	}
	// In a verifier the quoted values come from a TPM quote whose
	// signature was checked (package attest). This example quotes the
	// log's own replay, which is what a truthful TPM would have signed.
	regs, _ := l.Replay()
	quoted := measure.QuotedValues{}
	for _, b := range regs.Banks {
		quoted[b.Alg] = map[uint32][]byte{}
		for _, r := range b.ExtendedRegisters() {
			quoted[b.Alg][uint32(r)] = b.Value(r)
		}
	}
	v, err := l.Verify(quoted, measure.VerifyOptions{})
	if err != nil {
		panic(err)
	}
	f, err := v.Facts()
	if err != nil {
		panic(err)
	}
	sb := f.SecureBoot.Enabled
	fmt.Printf("Secure Boot: %v (event %v, bound %v)\n", sb.Value, sb.Events, sb.Bound)
	fmt.Printf("dbx: %d hashes\n", len(f.SecureBoot.DBX.Hashes))
	fmt.Printf("kernel: %s\n", f.Linux.Kernel.Value)
	fmt.Printf("command line bound to its digest: %v\n", f.Linux.CommandLine.Bound)
	fmt.Printf("confidential computing: %s\n", f.Confidential.Technology.Value)
	fmt.Printf("findings: %d\n", len(f.Findings))
	// Output:
	// Secure Boot: false (event [3], bound true)
	// dbx: 371 hashes
	// kernel: /vmlinuz-6.8.0-1010-gcp
	// command line bound to its digest: true
	// confidential computing: amd-sev-snp
	// findings: 0
}

// DescribeUnverified shows what an event's data says, for display only:
// nothing in it is vouched for by a TPM.
func ExampleDescribeUnverified() {
	data, err := os.ReadFile("testdata/eventlogs/ubuntu-2404-amd-sevsnp.bin")
	if err != nil {
		panic(err)
	}
	l, err := measure.Parse(data)
	if err != nil {
		panic(err)
	}
	for _, i := range []int{3, 16, 25} {
		ev := &l.UnverifiedEvents()[i]
		fmt.Printf("%d %v: %s\n", i, ev.Type, measure.DescribeUnverified(ev))
	}
	// Output:
	// 3 EV_EFI_VARIABLE_DRIVER_CONFIG: EFI_GLOBAL_VARIABLE SecureBoot, 1 bytes = false
	// 16 EV_EFI_ACTION: "Calling EFI Application from Boot Option"
	// 25 EV_EFI_BOOT_SERVICES_APPLICATION: image at 0xbcb78018 (966664 bytes) from PciRoot(0x0)/Pci(0x4,0x0)/NVMe(0x1,0000000000000000)/HD(15,GPT,fc24e8b6-5e8c-4396-aadd-2c6a9a43b92d,0x2800,0x35000)/\EFI\ubuntu\shimx64.efi
}

// A policy checks that dbx holds the revocations it requires.
func ExampleSignatureDB_Missing() {
	var dbx *measure.SignatureDB // not measured: it holds nothing
	required := [][]byte{make([]byte, 32)}
	fmt.Println(len(dbx.Missing(required)), "revocation(s) missing")
	// Output:
	// 1 revocation(s) missing
}
