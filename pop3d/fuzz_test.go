package pop3d

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"tidings/auth"
)

func FuzzCommand(f *testing.F) {
	for _, s := range []string{
		"USER alice@example.test\r\n", "PASS pass with spaces\r\n", "STAT", "LIST", "LIST 1\r\n",
		"RETR 2\r\n", "TOP 3 10\r\n", "UIDL 1", "DELE 1", "NOOP", "RSET", "QUIT\r\n", "CAPA",
		"STLS", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN", "AUTH", "APOP alice 0123456789abcdef",
		"", "\r\n", "us", "RETRIEVE 1", "TOP  1   2", "USER a\x00b", "LIST \xff\xfe", "list 1",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := ParseCommand(line)
		if err != nil {
			return
		}
		if len(c.Name) < 3 || len(c.Name) > 4 || strings.ToUpper(c.Name) != c.Name {
			t.Fatalf("ParseCommand(%q).Name = %q; want 3-4 upper-case letters", line, c.Name)
		}
		if len(c.Args) > maxArgs {
			t.Fatalf("ParseCommand(%q) has %d args; want at most %d", line, len(c.Args), maxArgs)
		}
		if c.Name == "PASS" {
			return
		}
		again, err := ParseCommand([]byte(c.Name + " " + strings.Join(c.Args, " ")))
		if err != nil || again.Name != c.Name || strings.Join(again.Args, "\x00") != strings.Join(c.Args, "\x00") {
			t.Fatalf("ParseCommand round trip of %q = %+v, %v; want %+v", line, again, err, c)
		}
	})
}

// FuzzSession feeds arbitrary bytes to a real SQLite-backed server in
// each state (the first byte picks it: AUTHORIZATION, TRANSACTION, or
// inside a SASL exchange) and requires that the server neither panics nor
// hangs: the connection always ends once the client stops sending.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"\x00CAPA\r\nUSER x\r\nPASS y\r\nQUIT\r\n",
		"\x01STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 3\r\nRSET\r\nQUIT\r\n",
		"\x01RETR 2\r\nDELE 1\r\nDELE 1\r\nLIST 1\r\nTOP 1 0\r\n",
		"\x01" + strings.Repeat("NOOP\r\n", 100),
		"\x00STLS\r\nCAPA\r\n",
		"\x02AGFsaWNlAHNlY3JldA==\r\n",
		"\x02*\r\nAUTH LOGIN\r\nYWxpY2U=\r\n",
		"\x00" + strings.Repeat("A", 5000) + "\r\nQUIT\r\n",
		"\x01TOP 1 4294967296\r\nLIST 99999999999\r\nRETR -1\r\n",
	} {
		f.Add([]byte(s))
	}
	base := newEnv(f, drivers()[0], envOpts{
		cfg:     Config{AllowInsecureAuth: true},
		authCfg: auth.Config{MaxFailuresIP: 1 << 30, MaxFailuresAccount: 1 << 30},
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		e := *base
		e.t = t // helpers must not call F.Helper inside the target
		if len(e.inboxUIDs()) < 3 {
			for _, m := range seedMessages() {
				e.appendMsg(m.prefix, m.body)
			}
		}
		var prefix string
		switch in[0] % 3 {
		case 1:
			prefix = "USER " + alice + "\r\nPASS " + alicePass + "\r\n"
		case 2:
			prefix = "AUTH PLAIN\r\n"
		}
		c, err := net.Dial("tcp", e.plain)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			io.WriteString(c, prefix)
			c.Write(in[1:])
			c.(*net.TCPConn).CloseWrite()
		}()
		var out bytes.Buffer
		// A reset is a close with our bytes unread (after "too many bad
		// commands"): a clean end too.
		if _, err := io.Copy(&out, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading replies: %v (got %q)", err, out.Bytes())
		}
		if !bytes.HasPrefix(out.Bytes(), []byte("+OK ")) {
			t.Fatalf("greeting = %q; want +OK", out.Bytes())
		}
		if n := e.srv.Panics(); n != 0 {
			t.Fatalf("Panics() = %d; want 0", n)
		}
	})
}
