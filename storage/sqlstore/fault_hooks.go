//go:build faulthooks

package sqlstore

import "os"

// FaultEnv selects the crash point of a binary built with -tags
// faulthooks. The value "sqlstore-before-commit" ends the process inside
// the write transaction of a Deliver, Submit or Append, after every row is
// written and right before COMMIT: the power cut the durability tests need
// between "the store has the message" and "the store does not". The
// smtpd package reads the same variable for its own points, whose names
// do not overlap.
const FaultEnv = "TIDINGS_FAULT"

// faultExitCode tells the test that the process stopped at the hook, not
// by a crash of its own.
const faultExitCode = 97

// faultPoint exits at once (no deferred function, no COMMIT, no rollback:
// the database sees a vanished client) when name is the selected point.
// The variable is read on every call rather than cached so the package
// keeps no mutable state; the cost only exists in faulthooks builds.
func faultPoint(name string) {
	if os.Getenv(FaultEnv) == name {
		os.Exit(faultExitCode)
	}
}
