package delivery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"tidings/internal/testprog"
	"tidings/storage"
)

func TestCRLFWriter(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\rb\r", "a\r\nb\r\n"},
		{"a\r\r\nb", "a\r\n\r\nb"},
		{"\n.\n", "\r\n.\r\n"},
		{"\r.\r", "\r\n.\r\n"},
		{"x\r\n.\r", "x\r\n.\r\n"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			// One byte at a time too: the state crosses writes.
			for _, chunk := range []int{len(tt.in) + 1, 1} {
				var b bytes.Buffer
				w := &crlfWriter{w: &b}
				for i := 0; i < len(tt.in); i += chunk {
					w.Write([]byte(tt.in[i:min(len(tt.in), i+chunk)]))
				}
				w.Flush()
				if b.String() != tt.want {
					t.Errorf("crlfWriter(%q) in chunks of %d = %q; want %q", tt.in, chunk, b.String(), tt.want)
				}
			}
			got, _ := io.ReadAll(newCRLFReader(strings.NewReader(tt.in)))
			if string(got) != tt.want {
				t.Errorf("newCRLFReader(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

// An 8-bit body for a peer without 8BITMIME becomes quoted-printable that
// decodes to the original, single part or inside a multipart.
func TestToQuotedPrintable(t *testing.T) {
	text := "Grüße aus Köln — 8 bit\r\nzweite Zeile\r\n"
	single := "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text
	multi := "Subject: y\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text +
		"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nascii only\r\n" +
		"\r\n--b1--\r\n"
	decode := func(t *testing.T, hdr map[string][]string, body io.Reader) string {
		t.Helper()
		cte := ""
		if v := hdr["Content-Transfer-Encoding"]; len(v) > 0 {
			cte = strings.ToLower(v[0])
		}
		if cte == "quoted-printable" {
			body = quotedprintable.NewReader(body)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		return string(b)
	}
	t.Run("single", func(t *testing.T) {
		var out bytes.Buffer
		if err := toQuotedPrintable(&out, strings.NewReader(single)); err != nil {
			t.Fatal(err)
		}
		if !isASCII(out.String()) {
			t.Fatalf("toQuotedPrintable(single) = %q; want 7-bit", out.String())
		}
		m, err := mail.ReadMessage(&out)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get("Content-Transfer-Encoding"); got != "quoted-printable" {
			t.Errorf("Content-Transfer-Encoding = %q; want quoted-printable", got)
		}
		if got := decode(t, m.Header, m.Body); got != text {
			t.Errorf("decoded body = %q; want %q", got, text)
		}
	})
	t.Run("multipart", func(t *testing.T) {
		var out bytes.Buffer
		if err := toQuotedPrintable(&out, strings.NewReader(multi)); err != nil {
			t.Fatal(err)
		}
		if !isASCII(out.String()) {
			t.Fatalf("toQuotedPrintable(multipart) = %q; want 7-bit", out.String())
		}
		m, err := mail.ReadMessage(&out)
		if err != nil {
			t.Fatal(err)
		}
		_, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
		mr := multipart.NewReader(m.Body, params["boundary"])
		var got []string
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("part: %v", err)
			}
			got = append(got, decode(t, p.Header, p))
		}
		if len(got) != 2 || got[0] != text || got[1] != "ascii only\r\n" {
			t.Errorf("decoded parts = %q; want %q and the ASCII part unchanged", got, text)
		}
	})
}

// Interop: Postfix's smtp-sink as the smarthost receives 20 messages and
// the runner records each delivered.
func TestSmtpSinkInterop(t *testing.T) {
	if !strings.Contains(os.Getenv("PATH"), "/usr/sbin") {
		t.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin")
	}
	prog := testprog.Need(t, "smtp-sink", "postfix")
	forEachDriver(t, func(t *testing.T, open func(t *testing.T) storage.Store) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		var args []string
		if os.Geteuid() == 0 {
			args = append(args, "-u", "nobody") // smtp-sink refuses to keep root
		}
		cmd := exec.Command(prog, append(args, addr, "20")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start smtp-sink: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-exited })
		waitFor(t, "smtp-sink to listen", func() bool {
			select {
			case <-exited:
				t.Fatalf("smtp-sink exited: %s", stderr.String())
			default:
			}
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		e := newObEnv(t, open, sinkOptions{})
		const n = 20
		for range n {
			e.enqueue(e.message(""), remote("sender@origin.example", "a@example.net", "b@example.net"))
		}
		r := e.runner(RunnerConfig{Smarthost: addr, SmarthostTLS: "none", Concurrency: 4}, nil)
		ctx, cancel := context.WithCancel(e.ctx)
		var wg sync.WaitGroup
		wg.Go(func() { r.Run(ctx) })
		waitFor(t, "the queue to empty", func() bool { return len(e.queue()) == 0 })
		cancel()
		wg.Wait()
		if got := e.log.count("msg=delivered"); got != 2*n {
			t.Errorf("delivered lines = %d; want %d (smtp-sink stderr: %s)", got, 2*n, stderr.String())
		}
		if got := e.log.count("msg=deferred") + e.log.count("msg=bounced"); got != 0 {
			t.Errorf("deferred/bounced lines = %d; want 0", got)
		}
	})
}

// The 8BITMIME conversion and the CRLF normaliser see whatever a client
// sent: they never panic, and what goes on the wire has CR and LF only in
// pairs.
func FuzzOutboundBytes(f *testing.F) {
	f.Add([]byte("Subject: x\r\nContent-Type: text/plain\r\n\r\nGrüße\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nä\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\n\xff\n--c--\r\n--b--"))
	f.Add([]byte("a\rb\n.\r\n\r.\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		cw := &crlfWriter{w: &out}
		if err := toQuotedPrintable(cw, bytes.NewReader(in)); err != nil {
			return
		}
		cw.Flush()
		b := out.Bytes()
		for i, c := range b {
			if c == '\r' && (i+1 >= len(b) || b[i+1] != '\n') {
				t.Fatalf("lone CR at %d in %q", i, b)
			}
			if c == '\n' && (i == 0 || b[i-1] != '\r') {
				t.Fatalf("lone LF at %d in %q", i, b)
			}
		}
	})
}
