// Package dnstest is an in-process DNS server for tests (github.com/miekg/dns),
// so no test ever asks the machine's resolver. Names not in the zone get
// NXDOMAIN.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server answers TXT, A, AAAA and MX queries from its records.
type Server struct {
	Addr string // host:port (UDP and TCP)

	mu  sync.Mutex
	txt map[string][]string
	a   map[string][]net.IP
	mx  map[string][]*net.MX
}

// New starts a server on 127.0.0.1 (a random port, UDP and TCP) that
// stops when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{txt: map[string][]string{}, a: map[string][]net.IP{}, mx: map[string][]*net.MX{}}
	// UDP and TCP on the same port: the UDP port may be taken for TCP,
	// so try a few.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: listen udp: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("dnstest: listen tcp: %v", err)
	}
	s.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	return s
}

func key(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// TXT sets the TXT records of name.
func (s *Server) TXT(name string, values ...string) {
	s.mu.Lock()
	s.txt[key(name)] = values
	s.mu.Unlock()
}

// A sets the address records of name.
func (s *Server) A(name string, ips ...net.IP) {
	s.mu.Lock()
	s.a[key(name)] = ips
	s.mu.Unlock()
}

// MX sets the MX records of name.
func (s *Server) MX(name string, mx ...*net.MX) {
	s.mu.Lock()
	s.mx[key(name)] = mx
	s.mu.Unlock()
}

// Resolver returns a resolver that asks only this server.
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr)
	}}
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	found := false
	for _, q := range req.Question {
		name := key(q.Name)
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
		_, hasTXT := s.txt[name]
		_, hasA := s.a[name]
		_, hasMX := s.mx[name]
		found = found || hasTXT || hasA || hasMX
		switch q.Qtype {
		case dns.TypeTXT:
			for _, v := range s.txt[name] {
				hdr.Rrtype = dns.TypeTXT
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: split255(v)})
			}
		case dns.TypeA, dns.TypeAAAA:
			for _, ip := range s.a[name] {
				if ip4 := ip.To4(); ip4 != nil && q.Qtype == dns.TypeA {
					hdr.Rrtype = dns.TypeA
					m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip4})
				} else if ip.To4() == nil && q.Qtype == dns.TypeAAAA {
					hdr.Rrtype = dns.TypeAAAA
					m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip})
				}
			}
		case dns.TypeMX:
			for _, mx := range s.mx[name] {
				hdr.Rrtype = dns.TypeMX
				m.Answer = append(m.Answer, &dns.MX{Hdr: hdr, Mx: dns.Fqdn(mx.Host), Preference: mx.Pref})
			}
		}
	}
	s.mu.Unlock()
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// split255 cuts a TXT value into the 255-octet strings DNS carries.
func split255(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}
