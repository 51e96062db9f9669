package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestLogLinesNameOneComponent: every line serve writes names its
// component exactly once; the archive's lines are component=archive, not a
// second component key after the proxy's.
func TestLogLinesNameOneComponent(t *testing.T) {
	e := newEnv(t)
	e.do("GET", "/api/v1/accounts", "") // something to archive at close
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), "archiver started") })
	e.stop()
	var archive int
	for _, line := range bytes.Split(bytes.TrimSpace([]byte(e.logs.String())), []byte("\n")) {
		if n := bytes.Count(line, []byte(`"component":`)); n != 1 {
			t.Errorf("%d component keys in %s", n, line)
		}
		if bytes.Contains(line, []byte(`"component":"archive"`)) {
			archive++
		}
	}
	if archive < 2 {
		t.Errorf("%d archive lines, want the start and the segment sealed at close:\n%s", archive, e.logs.String())
	}
}
