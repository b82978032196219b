package store

import (
	"testing"
	"time"

	"github.com/postback/postback/store/storetest/fakemap"
)

// TestStatsNotTruncated: bolt's scan bound is not reached by a small window
// (the behaviour of Stats is the conformance case StatsAndDeadCounts; how a
// backend truncates is its own).
func TestStatsNotTruncated(t *testing.T) {
	db := openTest(t)
	db.ingest(t, fakemap.Note("evt_1", fakemap.Facts("a")))
	s, err := db.Stats(storeT0.Add(-time.Hour), storeT0.Add(time.Hour), time.Hour)
	if err != nil || s.Truncated || s.Events != 1 {
		t.Errorf("stats %+v, %v", s, err)
	}
}
