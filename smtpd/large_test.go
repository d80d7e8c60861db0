package smtpd

import (
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lines generates a message body of n bytes of CRLF lines without holding
// it in memory.
type lines struct{ left int64 }

func (l *lines) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	const line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n" // 70 bytes
	n := 0
	for n+len(line) <= len(p) && l.left >= int64(len(line)) {
		n += copy(p[n:], line)
		l.left -= int64(len(line))
	}
	if n == 0 {
		n = copy(p, strings.Repeat("x", int(min(l.left, int64(len(p))))))
		l.left -= int64(n)
	}
	return n, nil
}

// TestLargeMessageFlatMemory streams a 50 MB message and reports how far
// the heap grew meanwhile: the spool moves to a file after
// storage.SpoolMemory, analysis and the blob store stream, so the growth
// must stay far below the message size.
func TestLargeMessageFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB message")
	}
	forEachDriver(t, func(t *testing.T, d driver) {
		e := newEnv(t, d, envOpts{mx: func(c *Config) { c.SpoolDir = t.TempDir() }})
		c := e.dial(e.mxAddr)
		const size = 50 << 20
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		var peak atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		if err := c.Mail("someone@sender.test", nil); err != nil {
			t.Fatalf("Mail = %v", err)
		}
		if err := c.Rcpt(alice, nil); err != nil {
			t.Fatalf("Rcpt = %v", err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatalf("Data = %v", err)
		}
		io.WriteString(w, "From: someone@nodmarc.test\r\nSubject: big\r\n\r\n")
		if _, err := io.Copy(w, &lines{left: size}); err != nil {
			t.Fatalf("writing 50 MB = %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("end of DATA = %v", err)
		}
		close(stop)
		wg.Wait()
		growth := int64(peak.Load()) - int64(base.HeapInuse)
		t.Logf("heap in use grew by %.1f MiB while receiving a %d MiB message", float64(growth)/(1<<20), size>>20)
		if growth > size/2 {
			t.Errorf("heap grew by %d bytes for a %d-byte message; want flat memory", growth, size)
		}
		if n := len(e.inbox(alice)); n != 1 {
			t.Errorf("alice has %d messages; want 1", n)
		}
	})
}
