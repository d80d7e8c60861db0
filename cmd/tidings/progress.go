package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress shows how far a long command is (DESIGN.md §Conventions: every
// long operation a person starts shows progress): a bar redrawn in place
// on a terminal, else a plain line every progressEvery, fit for logs.
type progress struct {
	w     io.Writer
	tty   bool
	total int64 // in the unit of done: messages or bytes; 0 = unknown
	now   func() time.Time
	last  time.Time
	drawn bool
}

const progressEvery = 5 * time.Second

func newProgress(w io.Writer, total int64, now func() time.Time) *progress {
	return &progress{w: w, tty: isTerminal(w), total: total, now: now, last: now()}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// update reports done (of total), with the messages and bytes so far.
func (p *progress) update(done int64, msgs int, bytes int64) {
	t := p.now()
	if p.tty {
		// Redraw at most ten times a second: a terminal is slower than an
		// import of small messages.
		if t.Sub(p.last) < 100*time.Millisecond && p.drawn {
			return
		}
		p.last, p.drawn = t, true
		pct := p.percent(done)
		const width = 30
		n := int(pct * width / 100)
		fmt.Fprintf(p.w, "\r[%s%s] %3.0f%%  %d messages  %.1f MB ", strings.Repeat("=", n), strings.Repeat(" ", width-n), pct, msgs, float64(bytes)/(1<<20))
		return
	}
	if t.Sub(p.last) < progressEvery {
		return
	}
	p.last = t
	fmt.Fprintf(p.w, "progress: %.0f%%, %d messages, %.1f MB\n", p.percent(done), msgs, float64(bytes)/(1<<20))
}

func (p *progress) percent(done int64) float64 {
	if p.total <= 0 {
		return 0
	}
	pct := float64(done) * 100 / float64(p.total)
	if pct > 100 {
		pct = 100
	}
	return pct
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
	}
}
