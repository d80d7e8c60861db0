package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"tidings/config"
	"tidings/message"
	"tidings/storage"
)

// account finds the account an admin command names.
func (e *env) account(ctx context.Context, addr string) (storage.Account, error) {
	a, err := e.store.AccountByAddress(ctx, addr)
	if errors.Is(err, storage.ErrNotFound) {
		return a, fmt.Errorf("no account %s; list them with: tidings user list", addr)
	}
	if err != nil {
		return a, fmt.Errorf("account %s: %w", addr, err)
	}
	return a, nil
}

func (e *env) mailbox(ctx context.Context, a storage.Account, name string) (storage.Mailbox, error) {
	m, err := e.store.Mailbox(ctx, storage.System, a.ID, name)
	if errors.Is(err, storage.ErrNotFound) {
		return m, fmt.Errorf("%s has no mailbox %q; list them with: tidings mailbox list %s", a.Address, name, a.Address)
	}
	if err != nil {
		return m, fmt.Errorf("mailbox %q of %s: %w", name, a.Address, err)
	}
	return m, nil
}

func (c *cli) mailboxList(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "mailbox list", args, 1, 1, func(e *env, pos []string) error {
		a, err := e.account(ctx, pos[0])
		if err != nil {
			return err
		}
		ms, err := e.store.Mailboxes(ctx, storage.System, a.ID)
		if err != nil {
			return fmt.Errorf("mailboxes of %s: %w", a.Address, err)
		}
		w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tSPECIAL-USE\tMESSAGES\tUNSEEN\tSIZE")
		for _, m := range ms {
			use := m.SpecialUse
			if use == "" {
				use = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", m.Name, use, m.Messages, m.Unseen, config.FormatSize(m.Size))
		}
		return w.Flush()
	})
}

func (c *cli) messageCount(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "message count", args, 2, 2, func(e *env, pos []string) error {
		a, err := e.account(ctx, pos[0])
		if err != nil {
			return err
		}
		m, err := e.mailbox(ctx, a, pos[1])
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, m.Messages)
		return nil
	})
}

func (c *cli) mailboxImport(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "mailbox import", args, 2, 3, func(e *env, pos []string) error {
		addr, name, src := pos[0], "INBOX", pos[len(pos)-1]
		if len(pos) == 3 {
			name = pos[1]
		}
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		a, err := e.account(ctx, addr)
		if err != nil {
			return err
		}
		m, err := e.store.Mailbox(ctx, storage.System, a.ID, name)
		if errors.Is(err, storage.ErrNotFound) {
			m, err = e.store.CreateMailbox(ctx, storage.System, a.ID, storage.NewMailbox{Name: name, Subscribed: true})
		}
		if err != nil {
			return fmt.Errorf("mailbox %q of %s: %w", name, a.Address, err)
		}
		imp := &importer{e: e, owner: a.ID, mailbox: m.ID}
		if fi.IsDir() {
			total, err := message.CountMaildir(src)
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			imp.prog = newProgress(c.stderr, int64(total), time.Now)
			err = message.ReadMaildir(src, func(r io.Reader, info message.MaildirInfo) error {
				if err := imp.add(ctx, r, info.Flags, info.Date); err != nil {
					return err
				}
				imp.prog.update(int64(imp.n), imp.n, imp.bytes)
				return nil
			})
			imp.prog.finish()
			if err != nil {
				return imp.failed(err)
			}
		} else {
			f, err := os.Open(src)
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			defer f.Close()
			// An mbox's progress is the offset reached: counting messages
			// first would read a large file twice.
			imp.prog = newProgress(c.stderr, fi.Size(), time.Now)
			err = message.ReadMbox(f, func(r io.Reader, info message.MboxInfo) error {
				if err := imp.add(ctx, r, info.Flags, info.Date); err != nil {
					return err
				}
				imp.prog.update(info.Offset, imp.n, imp.bytes)
				return nil
			})
			imp.prog.finish()
			if err != nil {
				return imp.failed(err)
			}
		}
		// Let the indexer write the search text before this process exits;
		// the server would otherwise extract it again later.
		if err := e.store.WaitIndexed(ctx); err != nil {
			e.log.Warn("search indexing incomplete", "err", err)
		}
		fmt.Fprintf(c.stdout, "imported %d messages (%.1f MB) into %s/%s\n", imp.n, float64(imp.bytes)/(1<<20), a.Address, m.Name)
		return nil
	})
}

// importer appends messages one by one, each in its own short transaction
// (DESIGN.md §Writing a message): spool, analyse, then Append.
type importer struct {
	e       *env
	owner   storage.AccountID
	mailbox storage.MailboxID
	prog    *progress
	n       int
	bytes   int64
}

func (imp *importer) add(ctx context.Context, r io.Reader, flags storage.Flags, date time.Time) error {
	sp := storage.NewSpool("", 0)
	defer sp.Close()
	if _, err := sp.ReadFrom(r); err != nil {
		return fmt.Errorf("reading message %d: %w", imp.n+1, err)
	}
	sp.Finish()
	rd, err := sp.Open()
	if err != nil {
		return err
	}
	an, err := message.Analyze(rd, sp.Size(), message.Options{})
	rd.Close()
	if err != nil {
		return fmt.Errorf("analysing message %d: %w", imp.n+1, err)
	}
	if date.IsZero() {
		// No delivery date in the source: the Date: header is a better
		// INTERNALDATE than the moment of the import.
		date = an.SentDate
	}
	_, err = imp.e.store.Append(ctx, storage.System, imp.owner, imp.mailbox, sp,
		storage.NewMessage{Flags: flags, InternalDate: date, Analysis: an})
	if err != nil {
		return fmt.Errorf("storing message %d: %w", imp.n+1, err)
	}
	imp.n++
	imp.bytes += sp.Size()
	return nil
}

func (imp *importer) failed(err error) error {
	return fmt.Errorf("import stopped after %d messages: %w", imp.n, err)
}
