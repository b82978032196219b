package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/postback/postback/store/storetest/fakemap"
)

// TestDeadGroupsInChunks: DeadGroups reads the deliveries in several short
// read transactions and counts each dead delivery once.
func TestDeadGroupsInChunks(t *testing.T) {
	db := openTest(t)
	var cs []Completion
	for i := range 7 {
		f := fmt.Sprint("dg", i)
		db.ingest(t, fakemap.Note("evt_"+f, fakemap.Facts(f)))
		ids, err := db.EventDeliveries(fakemap.FactID(f))
		if err != nil || len(ids) != 2 {
			t.Fatalf("deliveries of %s: %v, %v", f, ids, err)
		}
		reason := "http_400"
		if i%3 == 0 {
			reason = "http_500"
		}
		cs = append(cs, Completion{Key: ids[0].Key, State: StateDead, Reason: reason})
	}
	if err := db.Complete(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
	old := deadChunk
	deadChunk = 3
	t.Cleanup(func() { deadChunk = old })
	gs, err := db.DeadGroups("")
	if err != nil || len(gs) != 2 || gs[0].Reason != "http_400" || gs[0].Count != 4 || gs[1].Count != 3 {
		t.Errorf("groups %+v, %v", gs, err)
	}
}
