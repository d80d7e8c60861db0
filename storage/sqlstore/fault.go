//go:build !faulthooks

package sqlstore

// faultPoint is a crash point for the durability tests (see
// fault_hooks.go); without the faulthooks build tag it does nothing and
// the compiler inlines it away.
func faultPoint(name string) {}
