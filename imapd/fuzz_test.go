package imapd

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzConn feeds arbitrary bytes to a connection in each state (not
// authenticated, authenticated, selected); the server must neither crash
// nor let the library recover a panic.
func FuzzConn(f *testing.F) {
	for _, seed := range []string{
		"A1 CAPABILITY\r\n",
		"A1 LOGIN a b\r\n",
		"A1 FETCH 1:* (BODY[1.2.MIME]<0.5> BINARY[2] ENVELOPE BODYSTRUCTURE)\r\n",
		"A1 UID SEARCH OR (NOT SEEN) TEXT über HEADER Subject x\r\n",
		"A1 STORE 1 +FLAGS ($x \\Deleted)\r\nA2 EXPUNGE\r\n",
		"A1 APPEND INBOX {5+}\r\nhello\r\n",
		"A1 MOVE 1:* Trash\r\nA2 IDLE\r\nDONE\r\n",
		"A1 LIST \"\" \"*\" RETURN (STATUS (MESSAGES SIZE))\r\n",
		"A1 SELECT \"&AMQ-\"\r\nA2 CREATE a//b\r\n",
		"A1 SEARCH $\r\nA2 FETCH $ FLAGS\r\n",
	} {
		for state := range byte(3) {
			f.Add(state, []byte(seed))
		}
	}
	d := drivers()[0]
	st := d.NewDB(f)(f)
	seed(f, st)
	e := startServer(f, st, Config{AllowInsecureAuth: true, MaxConnsPerIP: 1 << 20, MaxConnsPerUserIP: 1 << 20})
	// A message to look at in the selected state.
	c := e.login(alice, clientOpts{})
	appendMsg(f, c, "INBOX", crlf(multipartMsg))
	c.Logout().Wait()

	f.Fuzz(func(t *testing.T, state byte, data []byte) {
		conn, err := net.Dial("tcp", e.plain)
		if err != nil {
			t.Fatalf("dial = %v", err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		var pre strings.Builder
		switch state % 3 {
		case 1:
			fmt.Fprintf(&pre, "P1 LOGIN %s %q\r\n", alice, password)
		case 2:
			fmt.Fprintf(&pre, "P1 LOGIN %s %q\r\nP2 SELECT INBOX\r\n", alice, password)
		}
		go func() {
			io.WriteString(conn, pre.String())
			conn.Write(data)
			io.WriteString(conn, "\r\nZ LOGOUT\r\n")
		}()
		io.Copy(io.Discard, conn)
		if n := e.srv.Panics(); n != 0 {
			t.Fatalf("Panics() = %d after %q; want 0", n, data)
		}
	})
}
