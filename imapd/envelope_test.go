package imapd

import (
	"fmt"
	"slices"
	"testing"
)

func TestParseAddressList(t *testing.T) {
	tests := []struct {
		raw  string
		want []string // name|mailbox|host
	}{
		{"", nil},
		{"a@b.c", []string{"|a|b.c"}},
		{`"Smith, Jo" <jo@x.org>`, []string{"Smith, Jo|jo|x.org"}},
		{"jo@x.org (Jo Smith)", []string{"Jo Smith|jo|x.org"}},
		{"undisclosed-recipients:;", []string{"|undisclosed-recipients|", "||"}},
		{"g: a@x, b@y; , c@z", []string{"|g|", "|a|x", "|b|y", "||", "|c|z"}},
		{"g: a@x", []string{"|g|", "|a|x", "||"}},
		{"good@x, bad@@, <nope>, , fine@y", []string{"|good|x", "|fine|y"}},
		{`"john doe"@x.org`, []string{`|"john doe"|x.org`}},
		{`"john"@x.org`, []string{"|john|x.org"}},
		{"<@route,@r2:user@host>", []string{"|user|host"}},
		{"Jo <jo@[192.0.2.1]>", []string{"Jo|jo|[192.0.2.1]"}},
		{"=?utf-8?q?J=C3=B6?= <j@x>", []string{"=?utf-8?q?J=C3=B6?=|j|x"}},
		{`"unterminated <a@b>`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			var got []string
			for _, a := range parseAddressList(tt.raw) {
				got = append(got, fmt.Sprintf("%s|%s|%s", a.Name, a.Mailbox, a.Host))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseAddressList(%q) = %q; want %q", tt.raw, got, tt.want)
			}
		})
	}
}

func TestMsgIDs(t *testing.T) {
	tests := []struct {
		raw  string
		want []string
	}{
		{"<a@b>", []string{"a@b"}},
		{"<a@b> <c@d>", []string{"a@b", "c@d"}},
		{"garbage", nil},
		{"<a@b", nil},
	}
	for _, tt := range tests {
		if got := msgIDs(tt.raw); !slices.Equal(got, tt.want) {
			t.Errorf("msgIDs(%q) = %q; want %q", tt.raw, got, tt.want)
		}
	}
}
