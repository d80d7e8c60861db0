#!/usr/bin/env python3
"""A session of Python's imaplib against Tidings, asserting every reply.

Run by imapd's TestInteropImaplib with: host port cafile user password.
INBOX holds three messages (Message-IDs 0@ and 1@interop.example.org and
banana@example.test, in any UID order). Exits non-zero on the first
mismatch; prints "imaplib flow ok" at the end.
"""
import imaplib
import re
import ssl
import sys
import time

host, port, cafile, user, password = sys.argv[1:6]


def fail(what, got):
    sys.stderr.write("FAIL %s: got %r\n" % (what, got))
    sys.exit(1)


def ok(what, res):
    typ, data = res
    if typ != "OK":
        fail(what, res)
    return data


# The server's self-signed certificate is the only one trusted, and its
# name (here the address) is checked.
ctx = ssl.create_default_context(cafile=cafile)
M = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)

caps = M.capabilities
for c in ("IMAP4REV1", "AUTH=PLAIN"):
    if c not in caps:
        fail("capability %s" % c, caps)
if "LOGINDISABLED" in caps:
    fail("LOGINDISABLED under TLS", caps)

ok("login", M.login(user, password))

caps = ok("capability", M.capability())[0].split()
for c in (b"IMAP4rev1", b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"SPECIAL-USE"):
    if c not in caps:
        fail("capability %s after login" % c.decode(), caps)

lines = ok("list", M.list())
names = b"\n".join(lines)
for want in (b"INBOX", b"\\Trash", b"\\Sent", b"Archive"):
    if want not in names:
        fail("list has %r" % want, lines)

if ok("select", M.select("INBOX")) != [b"3"]:
    fail("select count", M.response("EXISTS"))


def uid_of(mid):
    data = ok("uid search %s" % mid, M.uid("SEARCH", "HEADER", "Message-ID", "<%s>" % mid))
    uids = data[0].split()
    if len(uids) != 1:
        fail("uid search %s" % mid, data)
    return uids[0].decode()


u0 = uid_of("0@interop.example.org")
u1 = uid_of("1@interop.example.org")
ub = uid_of("banana@example.test")

data = ok("fetch 1:*", M.fetch("1:*", "(FLAGS RFC822.SIZE ENVELOPE)"))
if len(data) != 3 or not all(b"ENVELOPE (" in d for d in data):
    fail("fetch 1:* envelopes", data)
if b'"interop message 0"' not in b"".join(data):
    fail("fetch envelope subject", data)

data = ok("uid fetch header", M.uid("FETCH", u0, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
if data[0][1] != b"Subject: interop message 0\r\n\r\n":
    fail("uid fetch header fields", data)

# RFC822 (not PEEK) sets \Seen (RFC 3501 section 6.4.5).
data = ok("uid fetch rfc822", M.uid("FETCH", u1, "(RFC822)"))
if b"Body of message 1" not in data[0][1]:
    fail("uid fetch rfc822 body", data)
data = ok("flags after rfc822", M.uid("FETCH", u1, "(FLAGS)"))
if b"\\Seen" not in data[0]:
    fail("rfc822 sets \\Seen", data)

data = ok("uid store", M.uid("STORE", u0, "+FLAGS", r"(\Seen \Flagged)"))
if b"\\Flagged" not in data[0] or b"\\Seen" not in data[0]:
    fail("uid store reply", data)

ok("noop", M.noop())


def uids(what, *criteria):
    data = ok(what, M.uid("SEARCH", *criteria))
    return sorted(data[0].decode().split(), key=int)


def want(what, got, expect):
    if got != sorted(expect, key=int):
        fail(what, got)


want("search subject", uids("search subject", "SUBJECT", "banana"), [ub])
want("search text", uids("search text", "TEXT", "yellow"), [ub])
want("search body", uids("search body", "BODY", "\"some text\""), [u0, u1])
want("search or", uids("search or", "OR", "SUBJECT", "banana", "FLAGGED"), [u0, ub])
want("search unseen", uids("search unseen", "UNSEEN"), [ub])
want("search not", uids("search not", "NOT", "OR", "SEEN", "FROM", "bob"), [])
data = ok("search seq", M.search(None, "FLAGGED"))
if len(data[0].split()) != 1:
    fail("search seq flagged", data)

msg = (b"From: alice@example.test\r\nTo: bob@example.test\r\n"
       b"Subject: appended by imaplib\r\nMessage-ID: <appended@interop.example.org>\r\n"
       b"\r\nHello from Python.\r\n")
ok("append", M.append("INBOX", r"(\Draft $Interop)", imaplib.Time2Internaldate(time.time()), msg))
au = M.response("APPENDUID")
if au[1] == [None] or not re.match(rb"^\d+ \d+$", au[1][0]):
    fail("APPENDUID", au)
appended = au[1][0].split()[1].decode()
want("search appended", uids("search appended", "KEYWORD", "$Interop"), [appended])

ok("uid copy", M.uid("COPY", ub, "Archive"))
cu = M.response("COPYUID")
if cu[1] == [None]:
    fail("COPYUID", cu)

ok("uid store deleted", M.uid("STORE", u1, "+FLAGS", r"(\Deleted)"))
order = sorted([u0, u1, ub, appended], key=int)
data = ok("expunge", M.expunge())
if data != [str(order.index(u1) + 1).encode()]:
    fail("expunge reply", data)

data = ok("status", M.status("INBOX", "(MESSAGES UNSEEN)"))
if b"MESSAGES 3" not in data[0] or b"UNSEEN 2" not in data[0]:
    fail("status", data)

if ok("examine archive", M.select("Archive", readonly=True)) != [b"1"]:
    fail("examine archive count", M.response("EXISTS"))
ok("close", M.close())
typ, data = M.logout()
if typ != "BYE":
    fail("logout", (typ, data))
print("imaplib flow ok")
