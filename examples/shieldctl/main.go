// Command shieldctl is the command-line face of shieldvm: it works on files
// (event logs, PCR values, guardian keys, key protectors, vTPM state) so that
// every step of the shielding protocol can be run and inspected by hand.
//
// Usage:
//
//	shieldctl GROUP VERB [flags] [args]
//
// Each group lives in a file of its own (log.go for "log", and so on) and
// registers itself with [register]. Exit status: 0 on success, 1 when the
// work failed or a check did not pass, 2 on a usage error. Bad input never
// produces a panic or a stack trace, only one line on standard error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
)

// A group is a set of verbs under one name ("log", "guardian", ...).
type group struct {
	summary string
	verbs   map[string]verb
}

// A verb runs one command. It returns an error for a failure (exit 1); it
// returns an error wrapping errUsage for a usage error (exit 2); it returns
// errCheckFailed when it printed its own report of a failed check (exit 1,
// nothing more printed).
type verb struct {
	usage string // "[--json] FILE"
	help  string
	run   func(ctx context.Context, env *env, args []string) error
}

// env is what a verb may touch: its output streams. Verbs never write to
// os.Stdout directly, so tests run them in process.
type env struct {
	stdout, stderr io.Writer
}

var (
	groups = map[string]*group{}

	// errUsage marks a usage error (exit status 2).
	errUsage = errors.New("usage")
	// errCheckFailed means the verb already printed why a check failed.
	errCheckFailed = errors.New("check failed")
)

// register adds a verb to a group; it is called from init functions.
func register(groupName, summary, name string, v verb) {
	g := groups[groupName]
	if g == nil {
		g = &group{summary: summary, verbs: map[string]verb{}}
		groups[groupName] = g
	}
	g.verbs[name] = v
}

func usageErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		// A panic is a bug in shieldvm, never an answer to input; report it
		// in one line rather than a stack trace, and fail.
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "shieldctl: internal error: %v\n", r)
			code = 1
		}
	}()
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) < 1 {
			return 2
		}
		return 0
	}
	g := groups[args[0]]
	if g == nil {
		fmt.Fprintf(stderr, "shieldctl: unknown command %q\n", args[0])
		printUsage(stderr)
		return 2
	}
	if len(args) < 2 || args[1] == "-h" || args[1] == "--help" {
		printGroupUsage(stderr, args[0], g)
		if len(args) < 2 {
			return 2
		}
		return 0
	}
	v, ok := g.verbs[args[1]]
	if !ok {
		fmt.Fprintf(stderr, "shieldctl: unknown command %q\n", args[0]+" "+args[1])
		printGroupUsage(stderr, args[0], g)
		return 2
	}
	err := v.run(ctx, &env{stdout: stdout, stderr: stderr}, args[2:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errCheckFailed):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "shieldctl %s %s: %v\nusage: shieldctl %s %s %s\n", args[0], args[1], err, args[0], args[1], v.usage)
		return 2
	default:
		fmt.Fprintf(stderr, "shieldctl %s %s: %s\n", args[0], args[1], oneLine(err.Error()))
		return 1
	}
}

// oneLine keeps an error report to a single line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: shieldctl GROUP VERB [flags] [args]")
	for _, name := range slices.Sorted(maps.Keys(groups)) {
		fmt.Fprintf(w, "  %-10s %s\n", name, groups[name].summary)
	}
}

func printGroupUsage(w io.Writer, name string, g *group) {
	fmt.Fprintf(w, "usage: shieldctl %s VERB [flags] [args]\n", name)
	for _, vn := range slices.Sorted(maps.Keys(g.verbs)) {
		v := g.verbs[vn]
		fmt.Fprintf(w, "  %s %s %s\n      %s\n", name, vn, v.usage, v.help)
	}
}
