// Package server serves a [vtpm.TPM] to programs that expect a software
// TPM on a socket:
//
//   - the Microsoft simulator protocol ("mssim") on a TCP command port and a
//     platform port, which tpm2-tools' -T mssim (tcti-mssim), go-tpm's
//     transport/tcp and the IBM TSS speak ([Instance.ServeMSSIM]);
//   - the swtpm control channel and data channel on unix sockets, which
//     QEMU's -tpmdev emulator and libvirt speak, including the data channel
//     that QEMU passes with SCM_RIGHTS and the state blobs of a live
//     migration ([Instance.ServeSwtpm]).
//
// An [Instance] is one served TPM, the platform around it (power, locality,
// the TPM-established flag) and, optionally, a migration key and a
// persistence hook. Both transports may serve the same Instance at once;
// commands are executed one at a time, as on a real TPM.
//
// # Security
//
// The sockets are the guest's (and the host user's) attack surface. Every
// frame is read by its declared size against a hard bound
// ([MaxCommandSize], [MaxStateBlobSize]); a frame that has started must be
// complete within Config.FrameTimeout; the number of connections is bounded;
// no input panics. The transports add no authentication: bind the mssim
// ports to loopback and protect the unix sockets with file permissions.
//
// Migration blobs (CMD_GET_STATEBLOB) are the whole TPM state sealed by
// [vtpm.TPM.Seal] under a key derived from Config.MigrationKey, never in
// clear, whatever flags the client asks for. CMD_SET_STATEBLOB opens them
// with [vtpm.Open], which refuses a blob changed in any byte, sealed under
// another key, or sealed for another VM (Config.VMID).
//
// The per-connection resource manager of the mssim transport flushes the
// transient objects and sessions that a connection created when it closes.
// A session whose context the connection saved is handed over to whoever
// holds the context (tpm2-tools keeps sessions in files between
// processes); it keeps one of the TPM's session slots until it is loaded
// and flushed.
// It is hygiene, not isolation: handles are not virtualized, so concurrent
// clients of one Instance see each other's objects.
package server
