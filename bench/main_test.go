package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// goleak checks that no pool leaves goroutines behind after the runs.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
