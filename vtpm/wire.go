package vtpm

import "encoding/binary"

// reader is a bounded big-endian decoder for TPM wire structures. It never
// panics: reading past the end records TPM_RC_INSUFFICIENT and returns
// zeros. The first error sticks; later reads are no-ops.
//
// q is the format-one qualifier (handle, parameter or session number) added
// to format-one error codes, so that a handler reports which parameter was
// malformed (Part 2, section 6.6.3).
type reader struct {
	b    []byte
	code uint32
	q    uint32
}

func newReader(b []byte) reader { return reader{b: b} }

// param sets the parameter number (1-based) that errors refer to.
func (r *reader) param(n int) { r.q = rcP | uint32(n)<<8 }

// fail records the first error, qualified when it is a format-one code.
func (r *reader) fail(code uint32) {
	if r.code != 0 {
		return
	}
	r.code = qualify(code, r.q)
	r.b = nil
}

// qualify adds a handle, parameter or session number to a format-one code.
func qualify(code, q uint32) uint32 {
	if code&rcFmt1 != 0 && code&0xF00 == 0 && code&rcP == 0 {
		return code | q
	}
	return code
}

func (r *reader) ok() bool     { return r.code == 0 }
func (r *reader) len() int     { return len(r.b) }
func (r *reader) empty() bool  { return len(r.b) == 0 }
func (r *reader) rest() []byte { b := r.b; r.b = nil; return b }

func (r *reader) u8() uint8 {
	if len(r.b) < 1 {
		r.fail(rcInsufficient)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.fail(rcInsufficient)
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.fail(rcInsufficient)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail(rcInsufficient)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// bytes returns the next n bytes, aliasing the input.
func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.fail(rcInsufficient)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// b2b reads a TPM2B whose size may not exceed max (TPM_RC_SIZE). The result
// aliases the input.
func (r *reader) b2b(max int) []byte {
	n := int(r.u16())
	if !r.ok() {
		return nil
	}
	if n > max {
		r.fail(rcSize)
		return nil
	}
	return r.bytes(n)
}

// done reports TPM_RC_SIZE when bytes are left over after the last parameter
// (Part 3, section 5.2: unmarshaling must consume the whole parameter area).
func (r *reader) done() uint32 {
	if r.code != 0 {
		return r.code
	}
	if len(r.b) != 0 {
		return rcSize
	}
	return rcSuccess
}

// writer is an append-only big-endian encoder.
type writer struct{ b []byte }

func (w *writer) u8(v uint8)   { w.b = append(w.b, v) }
func (w *writer) u16(v uint16) { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *writer) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *writer) raw(v []byte) { w.b = append(w.b, v...) }

// b2b writes a TPM2B: a 16-bit size then the bytes. Callers bound v.
func (w *writer) b2b(v []byte) {
	w.u16(uint16(len(v)))
	w.b = append(w.b, v...)
}

// begin2b reserves a 16-bit size and returns its offset for end2b.
func (w *writer) begin2b() int {
	w.b = append(w.b, 0, 0)
	return len(w.b)
}

func (w *writer) end2b(start int) {
	binary.BigEndian.PutUint16(w.b[start-2:], uint16(len(w.b)-start))
}
