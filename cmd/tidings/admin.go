package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"tidings/auth"
	"tidings/config"
	"tidings/storage"
)

// withEnv parses the flags, checks the positional count, opens the store
// and runs fn.
func (c *cli) withEnv(ctx context.Context, name string, args []string, min, max int, fn func(e *env, pos []string) error) error {
	fs, o := newFlags(name)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, min, max); err != nil {
		return err
	}
	e, err := c.open(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	return fn(e, pos)
}

func (c *cli) domainAdd(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "domain add", args, 1, 1, func(e *env, pos []string) error {
		d, err := e.dir.AddDomain(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "added domain %s\n", d.Display)
		return nil
	})
}

func (c *cli) domainList(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "domain list", args, 0, 0, func(e *env, pos []string) error {
		ds, err := e.dir.Domains(ctx)
		if err != nil {
			return err
		}
		for _, d := range ds {
			switch {
			case d.Kind == storage.DomainRemote:
				fmt.Fprintf(c.stdout, "%s\trelay to %s\n", d.Display, d.RelayHost)
			case d.CatchAll != "":
				fmt.Fprintf(c.stdout, "%s\tcatch-all %s\n", d.Display, d.CatchAll)
			default:
				fmt.Fprintln(c.stdout, d.Display)
			}
		}
		return nil
	})
}

func (c *cli) domainRemove(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "domain remove", args, 1, 1, func(e *env, pos []string) error {
		if err := e.dir.RemoveDomain(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "removed domain %s\n", pos[0])
		return nil
	})
}

// readPassword reads one line from stdin for --password-stdin.
func (c *cli) readPassword() (string, error) {
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return "", errors.New("--password-stdin: no password on standard input")
		}
		return "", fmt.Errorf("--password-stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("--password-stdin: the password is empty")
	}
	return pw, nil
}

func (c *cli) userAdd(ctx context.Context, args []string) error {
	fs, o := newFlags("user add")
	stdin := fs.Bool("password-stdin", false, "read the password from standard input")
	quota := fs.String("quota", "", "storage quota, e.g. 2G or 500M")
	name := fs.String("name", "", "display name")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1); err != nil {
		return err
	}
	opt := auth.UserOptions{DisplayName: *name}
	if *quota != "" {
		if opt.QuotaBytes, err = config.ParseSize(*quota); err != nil {
			return usagef("--quota: %v", err)
		}
	}
	// Check the address before reading a password or opening the store,
	// so a typo costs nothing.
	if _, err := auth.ParseAddress(pos[0]); err != nil {
		return err
	}
	pw, generated := "", false
	if *stdin {
		if pw, err = c.readPassword(); err != nil {
			return err
		}
	} else {
		pw, generated = auth.GeneratePassword(), true
	}
	e, err := c.open(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	a, err := e.dir.AddUser(ctx, pos[0], pw, opt)
	if err != nil {
		return err
	}
	if generated {
		// Printed once: only the hash is stored.
		fmt.Fprintf(c.stdout, "password for %s: %s\n", a.Address, pw)
	} else {
		fmt.Fprintf(c.stdout, "added user %s\n", a.Address)
	}
	return nil
}

func (c *cli) userList(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "user list", args, 0, 1, func(e *env, pos []string) error {
		domain := ""
		if len(pos) == 1 {
			domain = pos[0]
		}
		us, err := e.dir.Users(ctx, domain)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ADDRESS\tSTATUS\tMESSAGES\tUSED\tQUOTA")
		for _, u := range us {
			status := "enabled"
			if !u.Enabled {
				status = "disabled"
			}
			q := "unlimited"
			if u.QuotaBytes > 0 {
				q = config.FormatSize(u.QuotaBytes)
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", u.Address, status, u.UsedMessages, config.FormatSize(u.UsedBytes), q)
		}
		return w.Flush()
	})
}

func (c *cli) userPasswd(ctx context.Context, args []string) error {
	fs, o := newFlags("user passwd")
	stdin := fs.Bool("password-stdin", false, "read the password from standard input")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1); err != nil {
		return err
	}
	if _, err := auth.ParseAddress(pos[0]); err != nil {
		return err
	}
	pw, generated := "", false
	if *stdin {
		if pw, err = c.readPassword(); err != nil {
			return err
		}
	} else {
		pw, generated = auth.GeneratePassword(), true
	}
	e, err := c.open(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	if err := e.dir.SetPassword(ctx, pos[0], pw); err != nil {
		return err
	}
	if generated {
		fmt.Fprintf(c.stdout, "password for %s: %s\n", pos[0], pw)
	} else {
		fmt.Fprintf(c.stdout, "password changed for %s\n", pos[0])
	}
	return nil
}

func (c *cli) userEnable(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "user enable", args, 1, 1, func(e *env, pos []string) error {
		if err := e.dir.SetEnabled(ctx, pos[0], true); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "enabled %s\n", pos[0])
		return nil
	})
}

func (c *cli) userDisable(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "user disable", args, 1, 1, func(e *env, pos []string) error {
		if err := e.dir.SetEnabled(ctx, pos[0], false); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "disabled %s\n", pos[0])
		return nil
	})
}

// userTrashcan turns the per-account trashcan on or off: with it, IMAP
// EXPUNGE and POP3 deletions move mail to Trash, and the daily purge
// empties Trash and Junk after trash_retention.
func (c *cli) userTrashcan(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "user trashcan", args, 2, 2, func(e *env, pos []string) error {
		var on bool
		switch pos[1] {
		case "on":
			on = true
		case "off":
		default:
			return usagef("user trashcan: want on or off, not %q", pos[1])
		}
		a, err := e.store.AccountByAddress(ctx, pos[0])
		if err != nil {
			return fmt.Errorf("user %q: %w", pos[0], err)
		}
		p := a.Policy
		p.Trashcan = on
		if err := e.dir.SetPolicy(ctx, pos[0], p); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "trashcan %s for %s\n", pos[1], pos[0])
		return nil
	})
}

func (c *cli) userRemove(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "user remove", args, 1, 1, func(e *env, pos []string) error {
		if err := e.dir.RemoveUser(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "removed %s\n", pos[0])
		return nil
	})
}

func (c *cli) aliasAdd(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "alias add", args, 2, -1, func(e *env, pos []string) error {
		if err := e.dir.AddAlias(ctx, pos[0], pos[1:]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "added alias %s -> %s\n", pos[0], strings.Join(pos[1:], ", "))
		return nil
	})
}

func (c *cli) aliasList(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "alias list", args, 0, 1, func(e *env, pos []string) error {
		domain := ""
		if len(pos) == 1 {
			domain = pos[0]
		}
		as, err := e.dir.Aliases(ctx, domain)
		if err != nil {
			return err
		}
		for _, a := range as {
			targets := strings.Join(a.Targets, ", ")
			if len(a.Targets) == 0 || len(a.Targets) == 1 && storage.Fold(a.Targets[0]) == storage.Fold(a.Address) {
				// The built-in postmaster@ and abuse@ without targets of
				// their own (auth's doc.go).
				targets = "(built-in: the domain's oldest enabled user)"
			}
			fmt.Fprintf(c.stdout, "%s -> %s\n", a.Address, targets)
		}
		return nil
	})
}

func (c *cli) aliasRemove(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "alias remove", args, 1, 1, func(e *env, pos []string) error {
		if err := e.dir.RemoveAlias(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "removed alias %s\n", pos[0])
		return nil
	})
}
