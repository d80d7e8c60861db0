package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	c := &cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(c.run(context.Background(), os.Args[1:]))
}

// cli is one invocation's streams. Tests run the built binary, but nothing
// here reaches for os.Stdout directly, so the wiring stays testable.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// command is one subcommand: its words ("user add"), its argument synopsis
// and its handler, which gets the arguments after the words.
type command struct {
	name  string
	args  string
	brief string
	run   func(ctx context.Context, args []string) error
}

func (c *cli) commands() []command {
	return []command{
		{"serve", "", "run the server (migrates the database first)", c.serve},
		{"migrate", "", "bring the database schema up to date", c.migrate},
		{"domain add", "DOMAIN", "serve a mail domain here", c.domainAdd},
		{"domain list", "", "list the domains", c.domainList},
		{"domain remove", "DOMAIN", "stop serving an empty domain", c.domainRemove},
		{"user add", "ADDRESS [--password-stdin] [--quota SIZE] [--name NAME]", "create a mailbox account", c.userAdd},
		{"user list", "[DOMAIN]", "list accounts", c.userList},
		{"user passwd", "ADDRESS [--password-stdin]", "set a new password", c.userPasswd},
		{"user disable", "ADDRESS", "refuse logins and end sessions", c.userDisable},
		{"user enable", "ADDRESS", "allow logins again", c.userEnable},
		{"user trashcan", "ADDRESS on|off", "deleted mail goes to Trash (purged after trash_retention)", c.userTrashcan},
		{"user remove", "ADDRESS", "disable now and delete the account with its mail", c.userRemove},
		{"alias add", "ADDRESS TARGET...", "deliver mail for ADDRESS to the targets", c.aliasAdd},
		{"alias list", "[DOMAIN]", "list aliases", c.aliasList},
		{"alias remove", "ADDRESS", "remove an alias", c.aliasRemove},
		{"mailbox list", "ADDRESS", "list an account's mailboxes with counts", c.mailboxList},
		{"mailbox import", "ADDRESS [MAILBOX] FILE|DIR", "import an mbox file or a Maildir (default MAILBOX: INBOX)", c.mailboxImport},
		{"message count", "ADDRESS MAILBOX", "print the number of messages in a mailbox", c.messageCount},
		{"queue list", "[--kind local|remote]", "list queued messages and their recipients", c.queueList},
		{"queue show", "ID", "show one queued message: envelope, recipients, header", c.queueShow},
		{"queue retry", "ID", "retry a queued message at the next queue run", c.queueRetry},
		{"queue remove", "ID", "delete a queued message without sending a bounce", c.queueRemove},
		{"dkim generate", "DOMAIN [--selector S] [--algorithm ed25519|rsa]", "make a DKIM signing key and print its DNS record", c.dkimGenerate},
		{"dns", "DOMAIN", "print every DNS record the domain needs", c.dnsRecords},
		{"check", "[--repair]", "verify counters, reference counts and quota usage", c.check},
		{"version", "", "print the version", c.version},
	}
}

// usageError is a mistake in the command line: exit status 2 and a usage
// hint.
type usageError struct {
	msg   string
	usage string // filled in by run from the command
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const commonFlags = "[--config FILE | --data DIR]"

// run executes one command line and returns the exit status.
func (c *cli) run(ctx context.Context, args []string) int {
	cmds := c.commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) == 0 {
			c.printUsage(c.stderr, cmds)
			return 2
		}
		c.printUsage(c.stdout, cmds)
		return 0
	}
	cmd, rest, err := lookup(cmds, args)
	if err != nil {
		fmt.Fprintf(c.stderr, "tidings: %v\n", err)
		fmt.Fprintln(c.stderr, "run 'tidings help' for the list of commands")
		return 2
	}
	err = cmd.run(ctx, rest)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(c.stdout, "usage: tidings %s %s %s\n", cmd.name, cmd.args, commonFlags)
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(c.stderr, "tidings %s: %s\n", cmd.name, ue.msg)
		fmt.Fprintf(c.stderr, "usage: tidings %s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), commonFlags)
		return 2
	}
	var ex exitError
	if errors.As(err, &ex) {
		return int(ex)
	}
	fmt.Fprintf(c.stderr, "tidings: %s\n", oneLine(err.Error()))
	return 1
}

// exitError ends the command with a status after it printed its own output
// (check with drift left).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// lookup finds the command named by the first one or two words.
func lookup(cmds []command, args []string) (command, []string, error) {
	var group []string
	for _, cmd := range cmds {
		if cmd.name == args[0] {
			return cmd, args[1:], nil
		}
		if g, sub, ok := strings.Cut(cmd.name, " "); ok && g == args[0] {
			group = append(group, sub)
			if len(args) > 1 && args[1] == sub {
				return cmd, args[2:], nil
			}
		}
	}
	if len(group) == 0 {
		return command{}, nil, fmt.Errorf("unknown command %q", args[0])
	}
	if len(args) == 1 || strings.HasPrefix(args[1], "-") {
		return command{}, nil, fmt.Errorf("%s: missing subcommand (%s)", args[0], strings.Join(group, ", "))
	}
	return command{}, nil, fmt.Errorf("%s: unknown subcommand %q (%s)", args[0], args[1], strings.Join(group, ", "))
}

func (c *cli) printUsage(w io.Writer, cmds []command) {
	fmt.Fprintln(w, "usage: tidings COMMAND [ARGS] "+commonFlags)
	fmt.Fprintln(w, "\nWithout --config, tidings runs in local mode with its data in --data (default ./tidings-data).")
	fmt.Fprintln(w, "\ncommands:")
	for _, cmd := range cmds {
		fmt.Fprintf(w, "  %-52s %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.brief)
	}
}

// options are the flags every command accepts.
type options struct {
	config string
	data   string
}

// newFlags returns a flag set with the common flags. Errors and usage are
// reported by run, so the set prints nothing itself.
func newFlags(name string) (*flag.FlagSet, *options) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &options{}
	fs.StringVar(&o.config, "config", "", "configuration file")
	fs.StringVar(&o.data, "data", "", "data directory (local mode)")
	return fs, o
}

// parseFlags parses args allowing flags after positional arguments
// ("user add alice@example.test --password-stdin"), which is how people
// type them. "--" ends the flags.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stopped at a positional argument; keep it and go on.
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the number of positional arguments.
func wantArgs(pos []string, min, max int) error {
	if len(pos) < min {
		return usagef("missing argument")
	}
	if max >= 0 && len(pos) > max {
		return usagef("unexpected argument %q", pos[max])
	}
	return nil
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
