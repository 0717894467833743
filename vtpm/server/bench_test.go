package server

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/shieldvm/shieldvm/vtpm"
)

// recordingTPM remembers the last command sent through it, so that a
// benchmark can replay pre-marshalled bytes.
type recordingTPM struct {
	transport.TPM
	last []byte
}

// Send sends cmd, again while the TPM answers TPM_RC_RETRY or
// TPM_RC_TESTING (libtpms does, before its self test completes).
func (r *recordingTPM) Send(cmd []byte) ([]byte, error) {
	r.last = append([]byte(nil), cmd...)
	for i := 0; ; i++ {
		rsp, err := r.TPM.Send(cmd)
		if err != nil || i == 100 || rc(rsp) != 0x922 && rc(rsp) != 0x90A {
			return rsp, err
		}
		time.Sleep(time.Millisecond)
	}
}

// akTemplate is a restricted ECC P-256 signing key, as attestation keys are.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
	}),
}

// benchCommands returns the pre-marshalled GetRandom(16), PCR_Extend(16)
// and Quote (ECC P-256, PCRs 0-7) commands for a started TPM, creating the
// attestation key they need.
func benchCommands(b *testing.B, tpm transport.TPM) map[string][]byte {
	b.Helper()
	rec := &recordingTPM{TPM: tpm}
	out := map[string][]byte{}
	if _, err := (tpm2.GetRandom{BytesRequested: 16}).Execute(rec); err != nil {
		b.Fatal(err)
	}
	out["GetRandom"] = rec.last
	extend16(b, rec, 1)
	out["PCR_Extend"] = rec.last
	ak, err := (tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(akTemplate),
	}).Execute(rec)
	if err != nil {
		b.Fatal(err)
	}
	_, err = (tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: ak.ObjectHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: make([]byte, 32)},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(0, 1, 2, 3, 4, 5, 6, 7)},
		}},
	}).Execute(rec)
	if err != nil {
		b.Fatal(err)
	}
	out["Quote"] = rec.last
	return out
}

// runCommands replays each command as a sub-benchmark and reports
// commands per second.
func runCommands(b *testing.B, tpm transport.TPM) {
	cmds := benchCommands(b, tpm)
	for _, name := range []string{"GetRandom", "PCR_Extend", "Quote"} {
		cmd := cmds[name]
		b.Run(name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				rsp, err := tpm.Send(cmd)
				if err != nil || rc(rsp) != 0 {
					b.Fatalf("rc %#x, %v", rc(rsp), err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cmds/s")
		})
	}
}

// BenchmarkMSSIM measures commands per second over the mssim protocol on
// loopback TCP, one client waiting for each response.
func BenchmarkMSSIM(b *testing.B) {
	s := serveMSSIM(b, New(newTPM(b, ""), nil))
	c := dialMSSIM(b, s)
	c.powerOn(b)
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(c); err != nil {
		b.Fatal(err)
	}
	runCommands(b, c)
}

// BenchmarkSwtpmSocket measures commands per second over a unix-socket data
// channel, the kind swtpm serves with --server type=unixio.
func BenchmarkSwtpmSocket(b *testing.B) {
	s := serveSwtpm(b, New(newTPM(b, ""), nil), true)
	ctrl := dialCtrl(b, s)
	data, err := net.Dial("unix", s.dataPath)
	if err != nil {
		b.Fatal(err)
	}
	defer data.Close()
	ctrl.boot(rawTPM{data})
	runCommands(b, rawTPM{data})
}

// BenchmarkServedStart measures the start of a served instance as QEMU sees
// it: a TPM is manufactured, served on a fresh control socket, QEMU's
// sequence runs (connect, CMD_SET_DATAFD, the ReadClock probe,
// CMD_GET_CAPABILITY, CMD_INIT) and TPM2_Startup answers.
func BenchmarkServedStart(b *testing.B) {
	dir := sockDir(b)
	n := 0
	startup := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0}
	for b.Loop() {
		tp, err := newTPMQuiet()
		if err != nil {
			b.Fatal(err)
		}
		in := New(tp, nil)
		n++
		path := fmt.Sprintf("%s/c%d", dir, n)
		ln, err := net.Listen("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- in.ServeSwtpm(ctx, ln, nil) }()
		c := dialCtrl(b, &served{ctrlPath: path})
		data := c.setDataFD()
		if rsp, err := (rawTPM{data}).Send(readClock); err != nil || len(rsp) != 10 {
			b.Fatal(err)
		}
		c.call(cmdGetCapability, nil, 8)
		if res := c.res(cmdInit, be32(0)); res != 0 {
			b.Fatal(res)
		}
		if rsp, err := (rawTPM{data}).Send(startup); err != nil || rc(rsp) != 0 {
			b.Fatal(rc(rsp), err)
		}
		c.c.Close()
		data.Close()
		cancel()
		<-done
		in.Close()
	}
}

func newTPMQuiet() (*vtpm.TPM, error) { return vtpm.New(vtpm.Config{DeferStartup: true}) }
