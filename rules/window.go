package rules

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // zone data inside the binary: scratch images have no /usr/share/zoneinfo
)

// Window is a weekly time window, Monday to Friday, [Start, End) in
// Location's local time, such as "09:00-17:00 EST".
type Window struct {
	Start    time.Duration  // since local midnight, inclusive
	End      time.Duration  // since local midnight, exclusive; at most 24h
	Zone     string         // the zone as written: "EST", "Europe/London"
	Location *time.Location `json:"-"`
}

var newYork = sync.OnceValues(func() (*time.Location, error) {
	return time.LoadLocation("America/New_York")
})

// zoneAliases are zone names that must not be read as the IANA name of the
// same spelling: tzdata's "EST" is a fixed UTC-5 with no daylight saving,
// but "09:00-17:00 EST" in a US finance policy means New York office hours.
var zoneAliases = map[string]func() (*time.Location, error){
	"EST": newYork,
	"EDT": newYork,
	"ET":  newYork,
}

// ParseWindow parses "HH:MM-HH:MM ZONE". ZONE is EST, EDT or ET (all
// America/New_York, with daylight saving) or an IANA name such as
// "Europe/Berlin" or "UTC". End may be 24:00; Start must be before End.
func ParseWindow(s string) (*Window, error) {
	span, zone, ok := strings.Cut(strings.TrimSpace(s), " ")
	zone = strings.TrimSpace(zone)
	if !ok || zone == "" {
		return nil, errors.New(`want "HH:MM-HH:MM ZONE", e.g. "09:00-17:00 EST"`)
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return nil, errors.New(`want "HH:MM-HH:MM ZONE", e.g. "09:00-17:00 EST"`)
	}
	start, err := parseClock(a, false)
	if err != nil {
		return nil, fmt.Errorf("start %w", err)
	}
	end, err := parseClock(b, true)
	if err != nil {
		return nil, fmt.Errorf("end %w", err)
	}
	if start >= end {
		return nil, fmt.Errorf("start %s is not before end %s (windows cannot span midnight)", a, b)
	}
	loc, err := loadZone(zone)
	if err != nil {
		return nil, err
	}
	return &Window{Start: start, End: end, Zone: zone, Location: loc}, nil
}

func loadZone(zone string) (*time.Location, error) {
	if f, ok := zoneAliases[strings.ToUpper(zone)]; ok {
		return f()
	}
	if zone == "Local" {
		return nil, errors.New(`zone "Local" depends on the host; name the zone`)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (use EST, ET or an IANA name such as America/Chicago)", zone)
	}
	return loc, nil
}

// parseClock parses "HH:MM" with two-digit fields; "24:00" only as an end.
func parseClock(s string, end bool) (time.Duration, error) {
	if len(s) != 5 || s[2] != ':' || !isDigit(s[0]) || !isDigit(s[1]) || !isDigit(s[3]) || !isDigit(s[4]) {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if m > 59 || h > 24 || h == 24 && (m != 0 || !end) {
		return 0, fmt.Errorf("%q is not a time of day", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

// Contains reports whether t falls in the window: a weekday, at or after
// Start and before End, on the wall clock of the window's location (so
// daylight saving moves the window with the local clock).
func (w *Window) Contains(t time.Time) bool {
	lt := t.In(w.Location)
	switch lt.Weekday() {
	case time.Saturday, time.Sunday:
		return false
	}
	h, m, s := lt.Clock()
	since := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
		time.Duration(s)*time.Second + time.Duration(lt.Nanosecond())
	return since >= w.Start && since < w.End
}

// String renders the window as written: "09:00-17:00 EST".
func (w *Window) String() string {
	return fmt.Sprintf("%s-%s %s", clock(w.Start), clock(w.End), w.Zone)
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}
