package measure

import "strings"

// LinuxFacts describe a Linux boot chain: what GRUB ran and loaded, the
// kernel's own PCR 9 measurements, and systemd-stub's measurements of a
// unified kernel image.
type LinuxFacts struct {
	// Kernel is the kernel's path, from GRUB's kernel command line.
	Kernel *Fact[string] `json:"kernel,omitempty"`
	// KernelFile is GRUB's PCR 9 measurement of that path, if any: its
	// digest is the file's.
	KernelFile *LinuxFile `json:"kernel_file,omitempty"`
	// Initrd is the initrd's path, from GRUB's initrd command.
	Initrd     *Fact[string] `json:"initrd,omitempty"`
	InitrdFile *LinuxFile    `json:"initrd_file,omitempty"`
	// CommandLine is the kernel command line: GRUB's kernel_cmdline
	// (bound when it hashes to its digest), or the load options
	// systemd-boot or systemd-stub logged.
	CommandLine *Fact[string] `json:"command_line,omitempty"`
	// Commands are the GRUB commands, in order (PCR 8).
	Commands []Fact[string] `json:"grub_commands,omitempty"`
	// Files are the files GRUB read (PCR 9): the digest is the file's and
	// is bound, the path is a hint.
	Files []LinuxFile `json:"files,omitempty"`
	// LoadOptionsDigest and InitrdDigest are the Linux EFI stub's PCR 9
	// measurements of its command line and initrd (tagged events).
	LoadOptionsDigest *Fact[Hex] `json:"load_options_digest,omitempty"`
	InitrdDigest      *Fact[Hex] `json:"initrd_digest,omitempty"`
	// Stub holds systemd-stub's measurements of a unified kernel image.
	Stub *StubFacts `json:"systemd_stub,omitempty"`
}

// LinuxFile is a file a boot loader measured: its path (a hint) and its
// digests (bound).
type LinuxFile struct {
	Path    string         `json:"path"`
	Event   int            `json:"event"`
	Digests map[string]Hex `json:"digests"`
}

// StubFacts are systemd-stub's measurements: the PE sections of a unified
// kernel image (PCR 11), the command line and credentials (PCR 12) and the
// system extensions (PCR 13).
type StubFacts struct {
	Sections    []LinuxFile   `json:"sections,omitempty"`
	CommandLine *Fact[string] `json:"command_line,omitempty"`
	Parameters  []LinuxFile   `json:"parameters,omitempty"`
	SysExts     []LinuxFile   `json:"sysexts,omitempty"`
}

func digestMap(ev *Event) map[string]Hex {
	m := make(map[string]Hex, len(ev.digests))
	for _, d := range ev.digests {
		if d.Alg.Known() {
			m[d.Alg.String()] = d.Value
		}
	}
	return m
}

// linuxStringRegister reports whether reg is where GRUB measures strings
// (PCR 8) and files (PCR 9); in a TDX log both go to RTMR2.
func (x *extractor) grubRegisters(reg uint32) (strs, files bool) {
	if x.kind == CCMR {
		return reg == 3, reg == 3
	}
	return reg == 8, reg == 9
}

func (x *extractor) ipl(ev *Event, t *Text, bound bool) {
	s := t.Value
	// shim's machine-owner key lists: the digest is of the variable.
	if !t.UTF16 {
		sb := &x.f.SecureBoot
		dig, _ := ev.Digest(x.alg)
		switch s {
		case "MokList":
			sb.MokList = fact(x, Hex(dig), ev.Index, true)
			return
		case "MokListX":
			sb.MokListX = fact(x, Hex(dig), ev.Index, true)
			return
		case "MokListTrusted":
			sb.MokListTrusted = fact(x, Hex(dig), ev.Index, true)
			return
		}
	}
	strs, files := x.grubRegisters(ev.Register)
	if t.UTF16 {
		x.stub(ev, s, bound)
		return
	}
	if strs {
		for _, p := range grubPrefixes {
			if !strings.HasPrefix(s, p.prefix) {
				continue
			}
			body := s[len(p.prefix):]
			lf := x.linux()
			if p.cmdline {
				lf.CommandLine = fact(x, body, ev.Index, bound)
				if k, _, _ := strings.Cut(body, " "); k != "" {
					lf.Kernel = fact(x, k, ev.Index, bound)
				}
				return
			}
			lf.Commands = append(lf.Commands, Fact[string]{Value: body, Events: x.evs(ev.Index), Bound: bound})
			cmd, args, _ := strings.Cut(body, " ")
			switch cmd {
			case "initrd", "initrdefi":
				path, _, _ := strings.Cut(args, " ")
				lf.Initrd = fact(x, path, ev.Index, bound)
			case "linux", "linuxefi":
				path, _, _ := strings.Cut(args, " ")
				lf.Kernel = fact(x, path, ev.Index, bound)
			}
			return
		}
	}
	if files {
		lf := x.linux()
		lf.Files = append(lf.Files, LinuxFile{Path: s, Event: ev.Index, Digests: digestMap(ev)})
	}
}

// stub handles the UTF-16 strings of systemd-boot and systemd-stub.
func (x *extractor) stub(ev *Event, s string, bound bool) {
	lf := x.linux()
	file := LinuxFile{Path: s, Event: ev.Index, Digests: digestMap(ev)}
	switch {
	case x.kind == PCR && ev.Register == 11:
		lf.stub().Sections = append(lf.stub().Sections, file)
	case x.kind == PCR && ev.Register == 12:
		if lf.stub().CommandLine == nil {
			lf.stub().CommandLine = fact(x, s, ev.Index, bound)
			lf.CommandLine = fact(x, s, ev.Index, bound)
		} else {
			lf.stub().Parameters = append(lf.stub().Parameters, file)
		}
	case x.kind == PCR && ev.Register == 13:
		lf.stub().SysExts = append(lf.stub().SysExts, file)
	default:
		// systemd-boot before v250 measured the load options into PCR 8.
		lf.CommandLine = fact(x, s, ev.Index, bound)
	}
}

func (lf *LinuxFacts) stub() *StubFacts {
	if lf.Stub == nil {
		lf.Stub = &StubFacts{}
	}
	return lf.Stub
}

func (x *extractor) tag(ev *Event, t *TaggedEvent) {
	dig, _ := ev.Digest(x.alg)
	switch t.ID {
	case TagLinuxLoadOptions:
		x.linux().LoadOptionsDigest = fact(x, Hex(dig), ev.Index, true)
	case TagLinuxInitrd:
		x.linux().InitrdDigest = fact(x, Hex(dig), ev.Index, true)
	}
}

// finish matches the kernel and initrd paths with GRUB's file
// measurements.
func (lf *LinuxFacts) finish() {
	match := func(path string) *LinuxFile {
		if path == "" {
			return nil
		}
		for i := len(lf.Files) - 1; i >= 0; i-- {
			f := &lf.Files[i]
			if f.Path == path || strings.HasSuffix(f.Path, ")"+path) || strings.HasSuffix(path, ")"+f.Path) {
				return f
			}
		}
		return nil
	}
	if lf.Kernel != nil {
		lf.KernelFile = match(lf.Kernel.Value)
	}
	if lf.Initrd != nil {
		lf.InitrdFile = match(lf.Initrd.Value)
	}
	// Red Hat's GRUB names its kernel and initrd measurements instead.
	for i := range lf.Files {
		switch f := &lf.Files[i]; f.Path {
		case "grub_linuxefi Kernel":
			lf.KernelFile = f
		case "grub_linuxefi Initrd":
			lf.InitrdFile = f
		}
	}
}
