package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"tidings/config"
	"tidings/storage"
)

var recipientStatus = map[storage.RecipientStatus]string{
	storage.RecipientPending:   "pending",
	storage.RecipientDelivered: "delivered",
	storage.RecipientFailed:    "failed",
}

func queueKind(k storage.QueueKind) string {
	if k == storage.QueueLocal {
		return "local"
	}
	return "remote"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func sender(s string) string { return "<" + s + ">" }

// queueList prints one line per queued message, then one indented line per
// recipient, the way mailq does.
func (c *cli) queueList(ctx context.Context, args []string) error {
	fs, o := newFlags("queue list")
	kind := fs.String("kind", "", "only local or remote messages")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, 0); err != nil {
		return err
	}
	var f storage.QueueFilter
	switch *kind {
	case "":
	case "local", "remote":
		k := storage.QueueRemote
		if *kind == "local" {
			k = storage.QueueLocal
		}
		f.Kind = &k
	default:
		return usagef("--kind: want local or remote, not %q", *kind)
	}
	e, err := c.open(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	ms, err := e.store.QueueList(ctx, f)
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		fmt.Fprintln(c.stdout, "queue is empty")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSIZE\tARRIVED\tNEXT ATTEMPT\tFROM")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, queueKind(m.Kind), config.FormatSize(m.Size()),
			stamp(m.Created), stamp(m.NextAttempt), sender(m.From))
		for _, r := range m.Recipients {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t\t\t%s\n", r.Address, recipientStatus[r.Status], attempts(r.Attempts), oneLine(r.LastReply))
		}
	}
	tw.Flush()
	fmt.Fprintf(c.stdout, "%d messages\n", len(ms))
	return nil
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

// queueShow prints everything about one message and its header.
func (c *cli) queueShow(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "queue show", args, 1, 1, func(e *env, pos []string) error {
		m, err := e.store.QueueGet(ctx, pos[0])
		if err != nil {
			return err
		}
		w := c.stdout
		fmt.Fprintf(w, "id:           %s\n", m.ID)
		fmt.Fprintf(w, "kind:         %s\n", queueKind(m.Kind))
		fmt.Fprintf(w, "from:         %s\n", sender(m.From))
		fmt.Fprintf(w, "destination:  %s\n", m.Destination)
		fmt.Fprintf(w, "size:         %s\n", config.FormatSize(m.Size()))
		fmt.Fprintf(w, "arrived:      %s\n", stamp(m.Created))
		fmt.Fprintf(w, "next attempt: %s\n", stamp(m.NextAttempt))
		fmt.Fprintf(w, "gives up:     %s\n", stamp(m.Expires))
		var params []string
		if m.ENVID != "" {
			params = append(params, "ENVID="+m.ENVID)
		}
		if m.RET != "" {
			params = append(params, "RET="+m.RET)
		}
		if m.SMTPUTF8 {
			params = append(params, "SMTPUTF8")
		}
		if m.EightBit {
			params = append(params, "BODY=8BITMIME")
		}
		if len(params) > 0 {
			fmt.Fprintf(w, "parameters:   %s\n", strings.Join(params, " "))
		}
		for _, r := range m.Recipients {
			fmt.Fprintf(w, "recipient:    %s %s, %s", r.Address, recipientStatus[r.Status], attempts(r.Attempts))
			if !r.LastAttempt.IsZero() {
				fmt.Fprintf(w, ", last %s", stamp(r.LastAttempt))
			}
			if r.Notify != "" {
				fmt.Fprintf(w, ", NOTIFY=%s", r.Notify)
			}
			if r.ORCPT != "" {
				fmt.Fprintf(w, ", ORCPT=%s", r.ORCPT)
			}
			fmt.Fprintln(w)
			if r.LastReply != "" {
				fmt.Fprintf(w, "              %s\n", oneLine(r.LastReply))
			}
		}
		rd, err := e.store.OpenQueueBlob(ctx, m.ID)
		if err != nil {
			return err
		}
		defer rd.Close()
		fmt.Fprintln(w)
		w.Write(m.Prefix)
		w.Write(headerBlock(io.NewSectionReader(rd, 0, rd.Size())))
		return nil
	})
}

// headerBlock reads a message's header (at most 64 KiB).
func headerBlock(r io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	s := string(b)
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := strings.Index(s, sep); i >= 0 {
			return []byte(s[:i+len(sep)/2])
		}
	}
	return b
}

func (c *cli) queueRetry(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "queue retry", args, 1, 1, func(e *env, pos []string) error {
		if err := e.store.QueueRetry(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s will be retried at the next queue run\n", pos[0])
		return nil
	})
}

func (c *cli) queueRemove(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "queue remove", args, 1, 1, func(e *env, pos []string) error {
		if err := e.store.QueueRemove(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "removed %s (no bounce sent)\n", pos[0])
		return nil
	})
}
