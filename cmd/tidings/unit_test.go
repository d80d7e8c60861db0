package main

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantPos []string
		wantPW  bool
		wantCfg string
	}{
		{"flags first", []string{"--password-stdin", "a@b.test"}, []string{"a@b.test"}, true, ""},
		{"flags after", []string{"a@b.test", "--password-stdin", "--config", "x.toml"}, []string{"a@b.test"}, true, "x.toml"},
		{"interleaved", []string{"a", "--config=c", "b"}, []string{"a", "b"}, false, "c"},
		{"double dash", []string{"a", "--", "--password-stdin"}, []string{"a", "--password-stdin"}, false, ""},
		{"none", nil, nil, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, o := newFlags("test")
			pw := fs.Bool("password-stdin", false, "")
			pos, err := parseFlags(fs, tt.args)
			if err != nil || !slices.Equal(pos, tt.wantPos) || *pw != tt.wantPW || o.config != tt.wantCfg {
				t.Errorf("parseFlags(%q) = %q, pw %v, config %q, %v; want %q, %v, %q", tt.args, pos, *pw, o.config, err, tt.wantPos, tt.wantPW, tt.wantCfg)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	c := &cli{}
	cmds := c.commands()
	tests := []struct {
		args     []string
		wantName string
		wantRest []string
		wantErr  bool
	}{
		{[]string{"serve", "--data", "d"}, "serve", []string{"--data", "d"}, false},
		{[]string{"user", "add", "a@b.test"}, "user add", []string{"a@b.test"}, false},
		{[]string{"message", "count", "a", "INBOX"}, "message count", []string{"a", "INBOX"}, false},
		{[]string{"user"}, "", nil, true},
		{[]string{"user", "--data", "x"}, "", nil, true},
		{[]string{"user", "frob"}, "", nil, true},
		{[]string{"frob"}, "", nil, true},
	}
	for _, tt := range tests {
		cmd, rest, err := lookup(cmds, tt.args)
		if (err != nil) != tt.wantErr || cmd.name != tt.wantName || !slices.Equal(rest, tt.wantRest) {
			t.Errorf("lookup(%q) = %q, %q, %v; want %q, %q, error %v", tt.args, cmd.name, rest, err, tt.wantName, tt.wantRest, tt.wantErr)
		}
	}
}

// TestPlaceholder checks each protocol's refusal in process, and that
// Shutdown returns once the listener is closed.
func TestPlaceholder(t *testing.T) {
	tests := []struct{ name, want string }{
		{"smtp", "421 4.3.2 mx.test service not available yet\r\n"},
		{"imap", "* BYE service not available yet\r\n"},
		{"pop3", "-ERR [SYS/TEMP] service not available yet\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p := newPlaceholder(tt.name, "mx.test", slog.New(slog.DiscardHandler))
			done := make(chan error, 1)
			go func() { done <- p.Serve(ln, nil) }()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if line != tt.want {
				t.Errorf("%s greeting = %q (%v); want %q", tt.name, line, err, tt.want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown() = %v; want nil", err)
			}
			if err := <-done; err != nil {
				t.Errorf("Serve() after Shutdown = %v; want nil", err)
			}
		})
	}
}
