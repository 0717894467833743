package server_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/tcp"
	"github.com/shieldvm/shieldvm/vtpm"
	"github.com/shieldvm/shieldvm/vtpm/server"
)

// Serve a vTPM over the Microsoft simulator protocol, as tpm2-tools'
// -T mssim:port=P expects it (platform port P+1), and use it with go-tpm's
// TCP transport.
func ExampleInstance_ServeMSSIM() {
	tpm, err := vtpm.New(vtpm.Config{VMID: "vm-42", DeferStartup: true})
	if err != nil {
		log.Fatal(err)
	}
	in := server.New(tpm, &server.Config{VMID: "vm-42"})
	defer in.Close()

	tpmLn, _ := net.Listen("tcp", "127.0.0.1:0")
	platLn, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.ServeMSSIM(ctx, tpmLn, platLn) }()

	client, err := tcp.Open(tcp.Config{CommandAddress: tpmLn.Addr().String(), PlatformAddress: platLn.Addr().String()})
	if err != nil {
		log.Fatal(err)
	}
	client.PowerOn()
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(client); err != nil {
		log.Fatal(err)
	}
	r, err := (tpm2.GetRandom{BytesRequested: 16}).Execute(client)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(r.RandomBytes.Buffer), "random bytes")
	client.Close()

	cancel()
	fmt.Println(<-done)
	// Output:
	// 16 random bytes
	// context canceled
}

// Serve a vTPM to QEMU: its -chardev socket,path=... for -tpmdev emulator
// is the control socket. A migration key enables live migration; Persist
// seals the state after every change that must survive a restart.
func ExampleInstance_ServeSwtpm() {
	tpm, err := vtpm.New(vtpm.Config{VMID: "vm-42", DeferStartup: true})
	if err != nil {
		log.Fatal(err)
	}
	var stateKey, migrationKey [32]byte // from keyprotector: tk.Derive(keyprotector.LabelVTPMState), ...
	var sealed []byte
	in := server.New(tpm, &server.Config{
		VMID:         "vm-42",
		MigrationKey: &migrationKey,
		Persist: func(ctx context.Context, t *vtpm.TPM) error {
			b, err := t.Seal(&stateKey)
			sealed = b // write it atomically to disk instead
			return err
		},
		Terminate: true, // return when QEMU disconnects
	})
	defer in.Close()

	ctrl, err := net.Listen("unix", filepath.Join(os.TempDir(), fmt.Sprintf("vtpm-example-%d.sock", os.Getpid())))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real server would run until QEMU leaves
	fmt.Println(in.ServeSwtpm(ctx, ctrl, nil), len(sealed))
	// Output:
	// context canceled 0
}
