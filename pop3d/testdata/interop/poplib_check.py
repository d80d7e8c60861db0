#!/usr/bin/env python3
"""Drives a Tidings POP3 server with Python's poplib (STLS on the plain
port, then implicit TLS) and prints what it saw as JSON for the Go test.

usage: poplib_check.py host plain_port tls_port user password cafile
"""
import json
import poplib
import ssl
import sys


def main():
    host, plain_port, tls_port, user, password, cafile = sys.argv[1:7]
    ctx = ssl.create_default_context(cafile=cafile)
    out = {}

    p = poplib.POP3(host, int(plain_port), timeout=30)
    out["greeting"] = p.getwelcome().decode()
    out["capa_plain"] = sorted(p.capa().keys())
    p.stls(context=ctx)
    out["capa_tls"] = sorted(p.capa().keys())
    p.user(user)
    p.pass_(password)
    out["stat"] = list(p.stat())
    out["list"] = [l.decode() for l in p.list()[1]]
    out["uidl"] = [l.decode() for l in p.uidl()[1]]
    out["retr2"] = [l.decode() for l in p.retr(2)[1]]
    out["top3"] = [l.decode() for l in p.top(3, 1)[1]]
    p.dele(1)
    p.rset()
    p.dele(3)
    out["quit"] = p.quit().decode()

    p = poplib.POP3_SSL(host, int(tls_port), context=ctx, timeout=30)
    p.user(user)
    p.pass_(password)
    out["stat_after"] = list(p.stat())
    out["uidl_after"] = [l.decode() for l in p.uidl()[1]]
    p.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
