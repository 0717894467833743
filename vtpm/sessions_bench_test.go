package vtpm

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Session benchmarks: go-tpm clients against the vTPM and the reference
// TPM in the same process, client-side work (HMACs, salts, decryption)
// included, as a guest sees it:
//
//	go test -run '^$' -bench 'Session' -benchmem ./vtpm/
//
// "one-shot" sessions are started for one command (StartAuthSession, then
// the command, which flushes the session); "reused" sessions are started
// once and used for every command. The go-tpm client (reflection-based
// marshalling, its own HMACs, salts and decryption) takes most of the
// time; tpm-ns/op is the time spent in the TPM's Send alone.

// timedTPM adds up the time spent in Send.
type timedTPM struct {
	tpm transport.TPM
	d   time.Duration
}

func (t *timedTPM) Send(cmd []byte) ([]byte, error) {
	start := time.Now()
	rsp, err := t.tpm.Send(cmd)
	t.d += time.Since(start)
	return rsp, err
}

// BenchmarkSessionUnseal unseals a sealed object through an HMAC session.
func BenchmarkSessionUnseal(b *testing.B) {
	for _, mode := range []string{"one-shot", "reused"} {
		b.Run(mode, func(b *testing.B) {
			for _, bt := range benchTargets {
				b.Run(bt.name, func(b *testing.B) {
					tp := &timedTPM{tpm: bt.tpm(b)}
					f := newSessionFixture(b, tp, false, true)
					s := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Auth(f.sealedAuth))
					if mode == "reused" {
						var closeSession func() error
						var err error
						s, closeSession, err = tpm2.HMACSession(tp, tpm2.TPMAlgSHA256, 16, tpm2.Auth(f.sealedAuth))
						if err != nil {
							b.Fatal(err)
						}
						defer closeSession()
					}
					tp.d = 0
					for b.Loop() {
						got, err := f.unseal(tp, s)
						if err != nil || string(got) != "the disk key" {
							b.Fatalf("Unseal = %q, %v", got, err)
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "unseals/s")
					b.ReportMetric(float64(tp.d.Nanoseconds())/float64(b.N), "tpm-ns/op")
				})
			}
		})
	}
}

// BenchmarkSessionSaltedNVRead reads 64 bytes of an NV index through an
// HMAC session salted with the ECC storage key, with AES-128-CFB response
// encryption.
func BenchmarkSessionSaltedNVRead(b *testing.B) {
	for _, mode := range []string{"one-shot", "reused"} {
		b.Run(mode, func(b *testing.B) {
			for _, bt := range benchTargets {
				b.Run(bt.name, func(b *testing.B) {
					tp := &timedTPM{tpm: bt.tpm(b)}
					f := newSessionFixture(b, tp, false, true)
					nv, data := benchNVIndex(b, tp)
					opts := []tpm2.AuthOption{tpm2.Auth([]byte("nv")), tpm2.Salted(f.eccSRK.ObjectHandle, f.eccPub(b)), tpm2.AESEncryption(128, tpm2.EncryptOut)}
					s := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...)
					if mode == "reused" {
						var closeSession func() error
						var err error
						s, closeSession, err = tpm2.HMACSession(tp, tpm2.TPMAlgSHA256, 16, opts...)
						if err != nil {
							b.Fatal(err)
						}
						defer closeSession()
					}
					tp.d = 0
					for b.Loop() {
						rsp, err := tpm2.NVRead{AuthHandle: tpm2.AuthHandle{Handle: nv.Handle, Name: nv.Name, Auth: s}, NVIndex: nv, Size: 64}.Execute(tp)
						if err != nil || !bytes.Equal(rsp.Data.Buffer, data) {
							b.Fatalf("NV_Read: %v", err)
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
					b.ReportMetric(float64(tp.d.Nanoseconds())/float64(b.N), "tpm-ns/op")
				})
			}
		})
	}
}

// benchNVIndex defines and writes a 64-byte NV index with authValue "nv".
func benchNVIndex(b *testing.B, tp transport.TPM) (tpm2.NamedHandle, []byte) {
	const idx = tpm2.TPMHandle(0x01500070)
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: pwAuth(nil)},
		Auth:       tpm2.TPM2BAuth{Buffer: []byte("nv")},
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: idx, NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{AuthWrite: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
			DataSize:   64,
		}),
	}.Execute(tp)
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("secret!!"), 8)
	pub, _ := tpm2.NVReadPublic{NVIndex: idx}.Execute(tp)
	nv := tpm2.NamedHandle{Handle: idx, Name: pub.NVName}
	if _, err := (tpm2.NVWrite{AuthHandle: tpm2.AuthHandle{Handle: idx, Name: pub.NVName, Auth: pwAuth([]byte("nv"))}, NVIndex: nv, Data: tpm2.TPM2BMaxNVBuffer{Buffer: data}}).Execute(tp); err != nil {
		b.Fatal(err)
	}
	pub, _ = tpm2.NVReadPublic{NVIndex: idx}.Execute(tp)
	return tpm2.NamedHandle{Handle: idx, Name: pub.NVName}, data
}
