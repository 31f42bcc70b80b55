// Package cli implements printgate's command line: one file per subcommand, output through
// the writers Run is given (tests capture them), secrets never written to a log.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
)

// Version is the build's version, set by the Makefile:
// -X github.com/printgate/printgate/cmd/printgate/cli.Version=...
var Version = "dev"

// env is what a subcommand may touch of the outside world. Tests replace every field.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// signals, when set, is called to make the context that SIGINT/SIGTERM cancel (run, demo).
	signals func(context.Context) (context.Context, context.CancelFunc)
	// columns, when set, returns the terminal's width in columns, 0 when unknown.
	columns func() int
}

// width is the terminal's width in columns: $COLUMNS, else the terminal's own, else 80.
func (e *env) width() int {
	if n, err := strconv.Atoi(e.getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	if e.columns != nil {
		if n := e.columns(); n > 0 {
			return n
		}
	}
	return 80
}

// command is one subcommand.
type command struct {
	name     string
	synopsis string // the argument line after "printgate NAME"
	short    string // one line for the top-level help
	long     string // paragraphs for NAME --help
	// flags declares the flags on fs and returns the function that runs the command with the
	// positional arguments.
	flags func(fs *flag.FlagSet) func(ctx context.Context, e *env, args []string) error
}

// commands in the order the top-level help lists them.
func commands() []*command {
	return []*command{
		initCmd(), runCmd(), enrollCmd(), peersCmd(), revokeCmd(), statusCmd(),
		meshCmd(),
		simCmd(), demoCmd(), auditCmd(), recoverCmd(), connectCmd(), versionCmd(), helpCmd(),
	}
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError is a mistake on the command line: exit code 2 and a pointer to --help.
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// Run runs printgate with args (without the program name) and returns the exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{
		stdin:  stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: os.Getenv,
		signals: func(ctx context.Context) (context.Context, context.CancelFunc) {
			return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		},
		columns: func() int { return terminalColumns(stdout) },
	}
	return run(context.Background(), e, args)
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		topUsage(e.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		topUsage(e.stdout)
		return exitOK
	case "-version", "--version":
		args = []string{"version"}
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(e.stderr, "printgate: unknown command %q\n\n", args[0])
		topUsage(e.stderr)
		return exitUsage
	}
	fs := flag.NewFlagSet("printgate "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	exec := c.flags(fs)
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		commandUsage(e.stdout, c, fs)
		return exitOK
	}
	if err == nil {
		err = exec(ctx, e, pos)
	}
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) || isFlagError(err) {
		fmt.Fprintf(e.stderr, "printgate %s: %v\nRun 'printgate %s --help' for usage.\n", c.name, err, c.name)
		return exitUsage
	}
	// Errors name their operation first ("init: ..."); say the command once.
	msg := strings.TrimPrefix(err.Error(), c.name+": ")
	fmt.Fprintf(e.stderr, "printgate %s: %v\n", c.name, redact(msg))
	return exitError
}

// flagError wraps an error from the flag package.
type flagError struct{ err error }

func (e *flagError) Error() string { return e.err.Error() }
func (e *flagError) Unwrap() error { return e.err }

func isFlagError(err error) bool {
	var fe *flagError
	return errors.As(err, &fe)
}

// parseInterspersed parses flags that may come before, between and after positional
// arguments (`enroll --state DIR NAME --role admin`); "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &flagError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at the first non-flag, or after "--".
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func topUsage(w io.Writer) {
	fmt.Fprintf(w, `printgate puts 3D printers on a private WireGuard network and nowhere else: the host has
no TCP listener and one silent UDP port; phones join by QR code with the stock WireGuard app.

Usage:
  printgate COMMAND [flags] [arguments]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.short)
	}
	tw.Flush()
	fmt.Fprintf(w, `
Run 'printgate COMMAND --help' for a command's flags.

A first gateway:
  printgate init   --state /var/lib/printgate --endpoint myhouse.example.org:51820
  printgate run    --state /var/lib/printgate --printer mk4=/dev/serial/by-id/usb-Prusa-if00
  printgate enroll --state /var/lib/printgate alice-phone --role admin

A laptop without admin rights (Windows, macOS, Linux), with the config enroll --conf wrote:
  printgate connect --conf laptop.conf --forward 8080=mk4   (a slicer uses http://127.0.0.1:8080)

enroll, peers, revoke and status talk to the running gateway over its control socket
(STATE/control.sock, mode 0600) and open the state directory directly when none runs; a
gateway still starting is waited for (up to 5 s).
`)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: printgate %s %s\n\n%s\n", c.name, c.synopsis, strings.TrimSpace(c.long))
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	fmt.Fprintf(w, "\nFlags:\n")
	slices.Sort(names)
	for _, n := range names {
		f := fs.Lookup(n)
		arg, usage := flag.UnquoteUsage(f)
		line := "  --" + n
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// needState returns the --state value or a usage error.
func needState(cmd, state string) error {
	if state == "" {
		return usagef(cmd, "--state DIR is required")
	}
	return nil
}

// exactArgs checks the number of positional arguments.
func exactArgs(cmd string, args []string, n int, what string) error {
	if len(args) != n {
		if n == 0 {
			return usagef(cmd, "unexpected argument %q", args[0])
		}
		return usagef(cmd, "want %s, got %d arguments", what, len(args))
	}
	return nil
}

// repeated is a flag that may be given many times: each value is parsed by parse and appended
// to *vals.
type repeated[T fmt.Stringer] struct {
	vals  *[]T
	parse func(string) (T, error)
}

func (r repeated[T]) String() string {
	if r.vals == nil { // the flag package's zero value, for its defaults
		return ""
	}
	s := make([]string, len(*r.vals))
	for i, v := range *r.vals {
		s[i] = v.String()
	}
	return strings.Join(s, " ")
}

func (r repeated[T]) Set(v string) error {
	x, err := r.parse(v)
	if err != nil {
		return err
	}
	*r.vals = append(*r.vals, x)
	return nil
}
