// Package bench compares shieldvm with its Go peers (go-attestation,
// go-eventlog, go-tpm-tools, swtpm) in one benchmark process, both sides
// interleaved over the same inputs. It is a module of its own so that the
// peers never become dependencies of the library.
//
//	cd bench && go test -run '^$' -bench .
//
// Metrics named x-PEER are the peer's time divided by ours: above 1 means
// shieldvm is faster.
package bench
