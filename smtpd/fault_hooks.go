//go:build faulthooks

package smtpd

import (
	"os"
	"syscall"
)

// FaultEnv selects the crash point of a binary built with -tags
// faulthooks: "before-commit" (message spooled and analysed, nothing
// submitted), "after-commit" (Submit returned, the 250 not yet sent) or
// "after-250" (the 250 written). The process kills itself with SIGKILL
// there, like a power cut: no deferred function, no shutdown.
const FaultEnv = "TIDINGS_FAULT"

func fault(point string) {
	if os.Getenv(FaultEnv) == point {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
