package vtpm

import "io"

// ReadWriter returns an io.ReadWriter over the TPM for clients that take
// one, such as go-tpm's legacy API and go-tpm-tools' client package: Write
// executes one command and Read returns its response. (go-tpm's
// transport.ToReadWriter returns io.EOF together with the last response
// bytes, which those clients treat as an error.)
//
// A ReadWriter is for one goroutine at a time; the TPM itself may be shared
// by many ReadWriters and Send callers.
func (t *TPM) ReadWriter() io.ReadWriter { return &tpmRW{t: t} }

type tpmRW struct {
	t   *TPM
	rsp []byte
}

func (rw *tpmRW) Write(p []byte) (int, error) {
	rsp, err := rw.t.Send(p)
	if err != nil {
		return 0, err
	}
	rw.rsp = rsp
	return len(p), nil
}

func (rw *tpmRW) Read(p []byte) (int, error) {
	if len(rw.rsp) == 0 {
		return 0, io.EOF
	}
	n := copy(p, rw.rsp)
	rw.rsp = rw.rsp[n:]
	return n, nil
}
