#!/bin/sh
# SMTP inbound throughput: Tidings (SQLite, PostgreSQL) against Postfix
# delivering to Maildirs, driven by Postfix's smtp-source: 10 sessions,
# 2,000 messages of 1 KiB, a new connection per message, 20 recipients
# each; end-to-end delivered messages per second, alternating runs.
# Needs root (Postfix runs its own throwaway instance), the postfix
# package (apt-get install -y postfix) and PostgreSQL as for the tests.
# The instance lives in /tmp/tidings-bench-postfix; Postfix insists that
# a second configuration directory is listed in the default main.cf, so
# this script sets alternate_config_directories there.
# Extra arguments go to the benchmark, e.g.: bench/smtp/run.sh -runs 3
set -eu
cd "$(dirname "$0")/../.."
for p in smtp-source postfix postconf; do
	if ! command -v $p >/dev/null 2>&1; then
		echo "$p not found: apt-get install -y postfix" >&2
		exit 1
	fi
done
dir=/tmp/tidings-bench-postfix/conf
case "$(postconf -h alternate_config_directories)" in
*"$dir"*) ;;
*) postconf -e "alternate_config_directories = $dir" ;;
esac
exec go test -run '^$' -bench '^BenchmarkCompare$' -benchtime 1x -timeout 30m ./bench/smtp -args "$@"
