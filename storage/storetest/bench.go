package storetest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"tidings/storage"
	"tidings/storage/fsblob"
)

// Bench runs the store benchmarks as sub-benchmarks of b:
//
//   - AppendDurable: one 1 KiB message per durable transaction (appends/s).
//   - AppendParallel20: the same from 20 concurrent writers on one mailbox.
//   - Listing10k/ChangesSince0 and Listing10k/Messages: metadata of a
//     10,000-message mailbox (prefilled once, not timed).
//   - PartialRead20MB/{fsblob,database}: OpenMessage and a 4 KiB ReadAt at
//     10 MB of a 20 MB message, as BODY[]<partial> does; the fsblob variant
//     counts the blob bytes read and fails above 1 MB per read.
func Bench(b *testing.B, h Harness) {
	b.Run("AppendDurable", func(b *testing.B) { benchAppend(b, h, 1) })
	b.Run("AppendParallel20", func(b *testing.B) { benchAppend(b, h, 20) })
	b.Run("Listing10k", func(b *testing.B) { benchListing(b, h) })
	b.Run("PartialRead20MB/fsblob", func(b *testing.B) { benchPartialRead(b, h, true) })
	b.Run("PartialRead20MB/database", func(b *testing.B) { benchPartialRead(b, h, false) })
}

// kibMessage returns a unique message of about 1 KiB.
func kibMessage() (storage.BytesSource, storage.NewMessage) {
	body := uniqueBody("benchmark")
	body += strings.Repeat("The quick brown fox jumps over the lazy dog.\r\n", (1024-len(body)-200)/46)
	return newMessage("bench", body)
}

func benchAppend(b *testing.B, h Harness, writers int) {
	e := newEnv(b, h.New(b))
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				src, m := kibMessage()
				if _, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m); err != nil {
					b.Errorf("Append = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

const listingSize = 10000

func benchListing(b *testing.B, h Harness) {
	e := newEnv(b, h.New(b))
	prefill(b, e, listingSize)
	b.Run("ChangesSince0", func(b *testing.B) {
		for b.Loop() {
			c, err := e.s.ChangesSince(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, 0)
			if err != nil || len(c.Changed) != listingSize {
				b.Fatalf("ChangesSince(0) = %d messages, %v; want %d", len(c.Changed), err, listingSize)
			}
		}
	})
	b.Run("Messages", func(b *testing.B) {
		for b.Loop() {
			ms, err := e.s.Messages(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nil, storage.MessageOptions{})
			if err != nil || len(ms) != listingSize {
				b.Fatalf("Messages() = %d messages, %v; want %d", len(ms), err, listingSize)
			}
		}
	})
}

// prefill fills INBOX with n messages: in Deliver batches of 100 entries
// (100 blobs, each delivered to INBOX 100 times: one transaction per
// batch), falling back to 20 concurrent appenders if the store refuses
// repeated targets.
func prefill(b *testing.B, e *env, n int) {
	b.Helper()
	const batch = 100
	done := 0
	for done < n {
		src, m := kibMessage()
		targets := make([]storage.DeliveryTarget, min(batch, n-done))
		for i := range targets {
			targets[i] = storage.DeliveryTarget{Owner: e.acct.ID, Message: cloneMessage(m)}
		}
		res, err := e.s.Deliver(e.ctx, src, targets)
		if err == nil {
			for _, r := range res {
				if r.Err != nil {
					err = r.Err
				}
			}
		}
		if err != nil {
			b.Logf("prefill: Deliver of %d entries = %v; falling back to appends", len(targets), err)
			break
		}
		done += len(targets)
	}
	if have := int(e.mailboxByID(e.s, e.acct.ID, e.inbox.ID).Messages); have < n {
		var next atomic.Int64
		next.Store(int64(have))
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					src, m := kibMessage()
					if _, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m); err != nil {
						b.Errorf("prefill Append = %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.Logf("prefill: %d messages by Deliver, %d by Append", have, n-have)
	}
	if got := e.mailboxByID(e.s, e.acct.ID, e.inbox.ID).Messages; got != int64(n) {
		b.Fatalf("prefill: INBOX holds %d messages; want %d", got, n)
	}
}

// countingBlobs counts the bytes read from the blobs it opens.
type countingBlobs struct {
	storage.BlobStore
	read atomic.Int64
}

func (c *countingBlobs) Open(ctx context.Context, hash string) (storage.ReaderAtCloser, error) {
	r, err := c.BlobStore.Open(ctx, hash)
	if err != nil {
		return nil, err
	}
	return &countingReader{r: r, n: &c.read}, nil
}

// countingReader offers only ReadAt, so a store cannot read it whole
// through io.Reader behind the counter's back.
type countingReader struct {
	r storage.ReaderAtCloser
	n *atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}
func (c *countingReader) Size() int64  { return c.r.Size() }
func (c *countingReader) Close() error { return c.r.Close() }

func benchPartialRead(b *testing.B, h Harness, useFS bool) {
	var (
		open    func(testing.TB) storage.Store
		counter *countingBlobs
	)
	if useFS {
		if h.NewWithBlobs == nil {
			b.Skipf("%s harness has no NewWithBlobs", h.Name)
		}
		fs, err := fsblob.New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		counter = &countingBlobs{BlobStore: fs}
		open = h.NewWithBlobs(b, counter)
	} else {
		open = h.New(b)
	}
	e := newEnv(b, open)
	const size, off, chunk = 20 << 20, 10 << 20, 4 << 10
	hdr := "From: a@example.net\r\nSubject: big\r\n\r\n"
	var buf bytes.Buffer
	buf.WriteString(hdr)
	for i := 0; buf.Len() < size; i++ {
		fmt.Fprintf(&buf, "line %09d of a large message body, padded to a fixed width......\r\n", i)
	}
	raw := buf.Bytes()[:size]
	src := storage.BytesSource(raw)
	m := storage.NewMessage{Analysis: analysis(hdr, string(raw[len(hdr):]), "big", msgDate)}
	m.Analysis.SearchText = "big"
	r, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m)
	if err != nil {
		b.Fatalf("Append(20 MB) = %v", err)
	}
	want := raw[off : off+chunk]
	p := make([]byte, chunk)
	if counter != nil {
		counter.read.Store(0)
	}
	b.SetBytes(chunk)
	b.ResetTimer()
	n := 0
	for b.Loop() {
		n++
		_, rd, err := e.s.OpenMessage(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, r.UID)
		if err != nil {
			b.Fatalf("OpenMessage = %v", err)
		}
		if _, err := rd.ReadAt(p, off); err != nil || !bytes.Equal(p, want) {
			b.Fatalf("ReadAt(4 KiB, 10 MB) = %v; want the message bytes at 10 MB", err)
		}
		rd.Close()
	}
	if counter != nil {
		per := float64(counter.read.Load()) / float64(n)
		b.ReportMetric(per, "blob-bytes-read/op")
		if per > 1<<20 {
			b.Errorf("a 4 KiB partial read read %.0f bytes of the blob; want at most 1 MB (OpenMessage must not read the whole blob)", per)
		}
	}
}
