package delivery

import (
	"testing"

	"tidings/storage/postgres/pgtest"
)

// TestMain is shared by every test file of the package (the inbound and
// outbound halves): one per test binary.
func TestMain(m *testing.M) { pgtest.Main(m) }
