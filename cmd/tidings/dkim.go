package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"tidings/delivery"
	"tidings/storage"
)

// servedDomain returns a domain served here, or a one-line error saying
// how to add it.
func servedDomain(ctx context.Context, e *env, name string) (storage.Domain, error) {
	d, err := e.store.Domain(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return d, fmt.Errorf("domain %q is not served here (add it with: tidings domain add %s)", name, name)
	}
	return d, err
}

// txtStrings splits a TXT value into quoted character-strings of at most
// 255 octets (RFC 1035 §3.3.14), as zone files want long DKIM keys.
func txtStrings(v string) string {
	var parts []string
	for len(v) > 255 {
		parts, v = append(parts, v[:255]), v[255:]
	}
	parts = append(parts, v)
	return `"` + strings.Join(parts, `" "`) + `"`
}

func (c *cli) dkimGenerate(ctx context.Context, args []string) error {
	fs, o := newFlags("dkim generate")
	selector := fs.String("selector", "", "DKIM selector (default: the algorithm and the month, e.g. ed202601)")
	alg := fs.String("algorithm", "ed25519", "ed25519 or rsa (2048 bits)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1); err != nil {
		return err
	}
	prefix := ""
	switch *alg {
	case "ed25519":
		prefix = "ed"
	case "rsa":
		prefix = "rsa"
	default:
		return usagef("--algorithm: want ed25519 or rsa, not %q", *alg)
	}
	if *selector == "" {
		*selector = prefix + time.Now().UTC().Format("200601")
	}
	if strings.ContainsAny(*selector, " .\t_@") {
		return usagef("--selector: %q is not a DNS label", *selector)
	}
	e, err := c.open(ctx, o)
	if err != nil {
		return err
	}
	defer e.Close()
	d, err := servedDomain(ctx, e, pos[0])
	if err != nil {
		return err
	}
	k, err := delivery.GenerateDKIMKey(d.Name, *selector, *alg)
	if err != nil {
		return err
	}
	rec, err := delivery.DKIMRecord(k)
	if err != nil {
		return err
	}
	if err := e.store.PutDKIMKey(ctx, k); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "stored %s key %q for %s; publish this record:\n", *alg, *selector, d.Display)
	fmt.Fprintf(c.stdout, "%s._domainkey.%s. IN TXT %s\n", *selector, d.Name, txtStrings(rec))
	return nil
}

// dnsRecords prints every record a domain needs, in zone-file form.
func (c *cli) dnsRecords(ctx context.Context, args []string) error {
	return c.withEnv(ctx, "dns", args, 1, 1, func(e *env, pos []string) error {
		d, err := servedDomain(ctx, e, pos[0])
		if err != nil {
			return err
		}
		host := strings.TrimSuffix(e.cfg.Hostname, ".") + "."
		dom := d.Name + "."
		keys, err := e.store.DKIMKeys(ctx, d.Name)
		if err != nil {
			return err
		}
		w := c.stdout
		rr := func(name, typ, value string) { fmt.Fprintf(w, "%-34s IN %-5s %s\n", name, typ, value) }
		fmt.Fprintf(w, "; DNS records for %s (mail host %s)\n", d.Display, host)
		rr(dom, "MX", "10 "+host)
		rr(dom, "TXT", `"v=spf1 mx -all"`)
		if len(keys) == 0 {
			fmt.Fprintf(w, "; no DKIM key yet: run tidings dkim generate %s\n", d.Name)
		}
		for _, k := range keys {
			rec, err := delivery.DKIMRecord(k)
			if err != nil {
				return fmt.Errorf("dkim key %s of %s: %w", k.Selector, d.Name, err)
			}
			rr(k.Selector+"._domainkey."+dom, "TXT", txtStrings(rec))
		}
		rr("_dmarc."+dom, "TXT", `"v=DMARC1; p=quarantine; rua=mailto:postmaster@`+d.Name+`"`)
		// RFC 6186 service records; RFC 8314 §5.1 prefers implicit TLS,
		// so those come first.
		for _, s := range []struct {
			svc  string
			port int
		}{
			{"_submissions._tcp", 465}, {"_submission._tcp", 587},
			{"_imaps._tcp", 993}, {"_imap._tcp", 143},
			{"_pop3s._tcp", 995}, {"_pop3._tcp", 110},
		} {
			rr(s.svc+"."+dom, "SRV", fmt.Sprintf("0 1 %d %s", s.port, host))
		}
		// Client autoconfiguration (Thunderbird autoconfig, Outlook
		// autodiscover) served by the web front end.
		rr("autoconfig."+dom, "CNAME", host)
		rr("autodiscover."+dom, "CNAME", host)
		rr("_autodiscover._tcp."+dom, "SRV", "0 1 443 "+host)
		return nil
	})
}
