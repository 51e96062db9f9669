package rules

import (
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// New York switches to EDT on 2026-03-08 and back to EST on 2026-11-01; the
// window follows the wall clock, so the same UTC instant is inside on one
// side of a switch and outside on the other.
func TestWindowContains(t *testing.T) {
	tests := []struct {
		window string
		at     string // RFC 3339, UTC
		want   bool
		note   string
	}{
		{"09:00-17:00 EST", "2026-03-09T13:30:00Z", true, "Mon 09:30 EDT, after the spring switch"},
		{"09:00-17:00 EST", "2026-03-06T13:30:00Z", false, "Fri 08:30 EST, before the spring switch"},
		{"09:00-17:00 EST", "2026-03-06T14:00:00Z", true, "Fri 09:00 EST: start is inclusive"},
		{"09:00-17:00 EST", "2026-03-06T21:59:59Z", true, "Fri 16:59:59 EST"},
		{"09:00-17:00 EST", "2026-03-06T22:00:00Z", false, "Fri 17:00 EST: end is exclusive"},
		{"09:00-17:00 EST", "2026-03-09T20:59:00Z", true, "Mon 16:59 EDT"},
		{"09:00-17:00 EST", "2026-03-09T21:00:00Z", false, "Mon 17:00 EDT"},
		{"09:00-17:00 EST", "2026-03-07T15:00:00Z", false, "Saturday 10:00 EST"},
		{"09:00-17:00 EST", "2026-03-08T15:00:00Z", false, "Sunday 11:00 EDT, the switch day"},
		{"09:00-17:00 EST", "2026-10-30T13:30:00Z", true, "Fri 09:30 EDT, before the autumn switch"},
		{"09:00-17:00 EST", "2026-11-02T13:30:00Z", false, "Mon 08:30 EST, after the autumn switch"},
		{"09:00-17:00 EST", "2026-11-02T14:00:00Z", true, "Mon 09:00 EST"},
		{"09:00-17:00 EST", "2026-10-30T21:30:00Z", false, "Fri 17:30 EDT"},
		{"09:00-17:00 EST", "2026-11-02T21:30:00Z", true, "Mon 16:30 EST"},
		{"09:00-17:00 ET", "2026-03-09T13:30:00Z", true, "ET is New York too"},
		{"09:00-17:00 est", "2026-03-09T13:30:00Z", true, "abbreviation case-insensitive"},
		{"09:00-17:00 America/New_York", "2026-03-06T13:30:00Z", false, "IANA New York"},
		{"00:00-24:00 EST", "2026-03-07T03:00:00Z", true, "Fri 22:00 EST local, Saturday in UTC"},
		{"00:00-24:00 EST", "2026-03-09T03:00:00Z", false, "Sun 23:00 EDT local, Monday in UTC"},
		{"09:00-17:00 Asia/Tokyo", "2026-03-09T00:30:00Z", true, "Mon 09:30 JST"},
		{"09:00-17:00 Asia/Tokyo", "2026-03-08T23:30:00Z", false, "Mon 08:30 JST"},
		{"09:00-17:00 UTC", "2026-03-09T16:59:59Z", true, "UTC"},
		{"08:30-16:30 Europe/London", "2026-03-30T07:45:00Z", true, "Mon 08:45 BST"},
		{"08:30-16:30 Europe/London", "2026-03-27T07:45:00Z", false, "Fri 07:45 GMT"},
	}
	for _, tt := range tests {
		t.Run(tt.window+" "+tt.at, func(t *testing.T) {
			w, err := ParseWindow(tt.window)
			if err != nil {
				t.Fatal(err)
			}
			if got := w.Contains(utc(tt.at)); got != tt.want {
				t.Errorf("Contains = %v, want %v (%s)", got, tt.want, tt.note)
			}
		})
	}
}

func TestParseWindow(t *testing.T) {
	good := map[string]string{
		"09:00-17:00 EST":           "America/New_York",
		"  09:00-17:00   ET ":       "America/New_York",
		"00:00-24:00 UTC":           "UTC",
		"07:15-19:45 Europe/Berlin": "Europe/Berlin",
	}
	for in, loc := range good {
		w, err := ParseWindow(in)
		if err != nil {
			t.Errorf("ParseWindow(%q): %v", in, err)
			continue
		}
		if w.Location.String() != loc {
			t.Errorf("ParseWindow(%q) location %s, want %s", in, w.Location, loc)
		}
	}
	bad := []string{
		"",
		"09:00-17:00",
		"9:00-17:00 EST",
		"09:00-5:00 EST",
		"09:00 - 17:00 EST",
		"0900-1700 EST",
		"09:00-17:00 XYZ",
		"09:00-17:00 Mars/Olympus",
		"09:00-17:00 Local",
		"17:00-09:00 EST",
		"09:00-09:00 EST",
		"24:00-24:00 UTC",
		"09:60-10:00 UTC",
		"09:00-25:00 UTC",
		"09:00-24:01 UTC",
		"9am-5pm EST",
	}
	for _, in := range bad {
		if w, err := ParseWindow(in); err == nil {
			t.Errorf("ParseWindow(%q) = %v, want an error", in, w)
		}
	}
}
