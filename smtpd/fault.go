//go:build !faulthooks

package smtpd

// fault is a crash point for the durability tests; without the
// faulthooks build tag it does nothing and costs nothing.
func fault(point string) {}
