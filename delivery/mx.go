package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// Resolver is the DNS the runner uses: *net.Resolver satisfies it. Tests
// point it at an in-process DNS server, never the machine's resolver.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// hop is one address to try, with the host name it came from (for
// STARTTLS SNI and the DSN's Remote-MTA).
type hop struct {
	host string
	addr string // ip:port
}

// permError is a failure that retrying cannot fix; it carries the SMTP
// reply to record and report.
type permError struct{ reply string }

func (e permError) Error() string { return e.reply }

// hops returns the addresses to try for a destination domain in order:
// its MX hosts by preference (RFC 5321 §5.1; equal preferences keep DNS
// order), or the domain itself when it has no MX (the implicit MX). A
// null MX (RFC 7505) or a domain that does not exist is a permanent
// failure; a DNS failure is temporary.
func hops(ctx context.Context, res Resolver, domain string, port int) ([]hop, error) {
	mxs, err := res.LookupMX(ctx, domain)
	var names []string
	switch {
	case err == nil && len(mxs) > 0:
		sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
		if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
			return nil, permError{"556 5.1.10 domain " + domain + " accepts no mail (null MX)"}
		}
		for _, mx := range mxs {
			if h := strings.TrimSuffix(mx.Host, "."); h != "" {
				names = append(names, h)
			}
		}
	case err == nil || isNotFound(err):
		// No MX: the domain's own address records (RFC 5321 §5.1).
		names = []string{domain}
	default:
		return nil, fmt.Errorf("451 4.4.3 MX lookup for %s failed: %v", domain, err)
	}
	var out []hop
	var lastErr error
	for _, n := range names {
		addrs, err := res.LookupHost(ctx, n)
		if err != nil {
			lastErr = err
			continue
		}
		for _, a := range addrs {
			out = append(out, hop{host: n, addr: net.JoinHostPort(a, strconv.Itoa(port))})
		}
	}
	if len(out) == 0 {
		if lastErr != nil && isNotFound(lastErr) && len(names) == 1 && names[0] == domain {
			return nil, permError{"550 5.1.2 domain " + domain + " does not exist"}
		}
		return nil, fmt.Errorf("451 4.4.4 no address for the mail hosts of %s: %v", domain, lastErr)
	}
	return out, nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
