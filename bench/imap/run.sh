#!/bin/sh
# IMAP throughput and memory: Tidings (SQLite, PostgreSQL; the built
# `tidings serve`) against Dovecot's imapd, N concurrent clients over
# implicit TLS looping SELECT / FETCH 1:* (FLAGS ENVELOPE) / STORE / SEARCH
# TEXT / IDLE, alternating runs; then memory per idle connection with
# 1,000 IDLE clients. Needs: apt-get install -y dovecot-imapd; PostgreSQL
# as for the tests (TIDINGS_TEST_POSTGRES or 127.0.0.1:5432); root (the
# Dovecot instance runs its mail processes as user mail). Extra arguments
# go to the benchmark, e.g.:
#   bench/imap/run.sh -clients 20 -msgs 1000 -duration 15s -runs 3 -idle 2000
set -eu
cd "$(dirname "$0")/../.."
if ! command -v dovecot >/dev/null 2>&1 || [ ! -x /usr/lib/dovecot/imap ]; then
	echo "dovecot imapd not installed: apt-get install -y dovecot-imapd" >&2
	exit 1
fi
exec go test -run '^$' -bench '^BenchmarkCompare$' -benchtime 1x -timeout 15m ./bench/imap -args "$@"
