package delivery

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"tidings/storage"
)

func TestNotifies(t *testing.T) {
	tests := []struct {
		notify, kind string
		want         bool
	}{
		{"", "FAILURE", true},
		{"", "DELAY", true},
		{"", "SUCCESS", false},
		{"NEVER", "FAILURE", false},
		{"SUCCESS", "FAILURE", false},
		{"failure, delay", "DELAY", true},
		{"FAILURE", "DELAY", false},
	}
	for _, tt := range tests {
		if got := notifies(tt.notify, tt.kind); got != tt.want {
			t.Errorf("notifies(%q, %q) = %v; want %v", tt.notify, tt.kind, got, tt.want)
		}
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		reply string
		perm  bool
		want  string
	}{
		{"550 5.1.1 no such user", true, "5.1.1"},
		{"451 4.3.0 try later", false, "4.3.0"},
		{"4.4.7 delivery time expired; last reply: 450 4.2.1 busy", true, "4.4.7"},
		{"550 go away", true, "5.0.0"},
		{"connection refused", false, "4.0.0"},
	}
	for _, tt := range tests {
		if got := statusOf(tt.reply, tt.perm); got != tt.want {
			t.Errorf("statusOf(%q, %v) = %q; want %q", tt.reply, tt.perm, got, tt.want)
		}
	}
}

// RET=FULL (or none) returns the whole original as message/rfc822; a
// UTF-8 recipient makes the status part message/global-delivery-status.
func TestBuildDSNVariants(t *testing.T) {
	orig := []byte("Subject: hi\r\n\r\nthe body\r\n")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name, ret, addr string
		want, not       []string
	}{
		{"full", "", "x@example.net", []string{"Content-Type: message/rfc822", "the body", "Content-Type: message/delivery-status", "Final-Recipient: rfc822; x@example.net"}, []string{"Original-Envelope-Id"}},
		{"hdrs", "HDRS", "x@example.net", []string{"Content-Type: text/rfc822-headers", "Subject: hi"}, []string{"the body"}},
		{"utf8", "FULL", "ü@example.net", []string{"Content-Type: message/global-delivery-status", "Final-Recipient: utf-8; ü@example.net"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := buildDSN(dsnInput{hostname: "mail.example.org", from: "postmaster@example.org", action: actionFailed,
				msg:      storage.QueueMessage{ID: "q1", From: "s@origin.example", RET: tt.ret, Created: now, Expires: now.Add(time.Hour)},
				rcpts:    []dsnRecipient{{r: storage.QueueRecipient{Address: tt.addr}, reply: "550 5.1.1 no"}},
				original: bytes.NewReader(orig), origSize: int64(len(orig)), now: now})
			for _, w := range tt.want {
				if !strings.Contains(string(d), w) {
					t.Errorf("buildDSN(%s) lacks %q:\n%s", tt.name, w, d)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(string(d), w) {
					t.Errorf("buildDSN(%s) has %q:\n%s", tt.name, w, d)
				}
			}
		})
	}
}
