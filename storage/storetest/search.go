package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"tidings/storage"
)

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC) }

// Search over flags, UIDs, sizes, dates, text and nested OR/NOT.
func testSearch(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	type spec struct {
		subject, body string
		flags         storage.Flags
		date          time.Time
	}
	specs := []spec{
		{"alpha report", "short", storage.Flags{Seen: true}, day(2020, 1, 1)},
		{"beta", strings.Repeat("zebra crossing ", 400), storage.Flags{Flagged: true}, day(2021, 6, 1)},
		{"gamma alpha", "medium text", storage.Flags{Seen: true, Flagged: true, Keywords: []string{"$Work"}}, day(2022, 3, 1)},
		{"delta", "to be removed", storage.Flags{Deleted: true}, day(2023, 1, 1)},
	}
	var (
		res   []storage.AppendResult
		sizes []int64
	)
	for _, sp := range specs {
		src, m := newMessageDated(sp.subject, uniqueBody(sp.body), sp.date.Add(-24*time.Hour))
		m.Flags = sp.flags
		m.InternalDate = sp.date
		r, err := e.s.Append(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, src, m)
		if err != nil {
			t.Fatalf("Append(%q) = %v", sp.subject, err)
		}
		res = append(res, r)
		sizes = append(sizes, src.Size())
	}
	if err := e.s.WaitIndexed(e.ctx); err != nil {
		t.Fatalf("WaitIndexed = %v", err)
	}
	ms := e.messages(e.s, e.acct.ID, e.inbox.ID)
	for i, m := range ms {
		if !m.InternalDate.Equal(specs[i].date) {
			t.Errorf("UID %d InternalDate = %v; want %v", m.UID, m.InternalDate, specs[i].date)
		}
	}
	flag := func(name string) storage.SearchKey { return storage.SearchKey{Op: storage.SearchFlag, Name: name} }
	not := func(k storage.SearchKey) storage.SearchKey {
		return storage.SearchKey{Op: storage.SearchNot, Children: []storage.SearchKey{k}}
	}
	or := func(k ...storage.SearchKey) storage.SearchKey {
		return storage.SearchKey{Op: storage.SearchOr, Children: k}
	}
	and := func(k ...storage.SearchKey) storage.SearchKey {
		return storage.SearchKey{Op: storage.SearchAnd, Children: k}
	}
	text := func(op storage.SearchOp, v string) storage.SearchKey { return storage.SearchKey{Op: op, Value: v} }
	when := func(op storage.SearchOp, tm time.Time) storage.SearchKey { return storage.SearchKey{Op: op, Time: tm} }
	tests := []struct {
		name string
		key  storage.SearchKey
		want []storage.UID
	}{
		{"ALL", storage.SearchKey{Op: storage.SearchAll}, []storage.UID{1, 2, 3, 4}},
		{"SEEN", flag(`\Seen`), []storage.UID{1, 3}},
		{"UNSEEN", not(flag(`\Seen`)), []storage.UID{2, 4}},
		{"DELETED", flag(`\Deleted`), []storage.UID{4}},
		{"KEYWORD $work", storage.SearchKey{Op: storage.SearchKeyword, Name: "$WORK"}, []storage.UID{3}},
		{"UID 2:3", storage.SearchKey{Op: storage.SearchUID, UIDs: storage.UIDSet{{Start: 2, Stop: 3}}}, []storage.UID{2, 3}},
		{"UID 3:*", storage.SearchKey{Op: storage.SearchUID, UIDs: storage.UIDSet{{Start: 3, Stop: 0}}}, []storage.UID{3, 4}},
		{"OR FLAGGED UID 1", or(flag(`\Flagged`), storage.SearchKey{Op: storage.SearchUID, UIDs: set(1)}), []storage.UID{1, 2, 3}},
		{"NOT (OR SEEN DELETED) LARGER", and(not(or(flag(`\Seen`), flag(`\Deleted`))), storage.SearchKey{Op: storage.SearchLarger, Size: 1000}), []storage.UID{2}},
		{"NOT NOT SEEN", not(not(flag(`\Seen`))), []storage.UID{1, 3}},
		{"LARGER size of 1", storage.SearchKey{Op: storage.SearchLarger, Size: sizes[0]}, larger(sizes, sizes[0])},
		{"SMALLER size of 2", storage.SearchKey{Op: storage.SearchSmaller, Size: sizes[1]}, smaller(sizes, sizes[1])},
		{"BEFORE 2021", when(storage.SearchBefore, day(2021, 1, 1)), []storage.UID{1}},
		{"SINCE 2022", when(storage.SearchSince, day(2022, 1, 1)), []storage.UID{3, 4}},
		{"SINCE exact date", when(storage.SearchSince, day(2022, 3, 1)), []storage.UID{3, 4}},
		{"SENTBEFORE 2021-06-01", when(storage.SearchSentBefore, day(2021, 6, 1)), []storage.UID{1, 2}},
		{"SENTSINCE 2022", when(storage.SearchSentSince, day(2022, 1, 1)), []storage.UID{3, 4}},
		{"MODSEQ of 3", storage.SearchKey{Op: storage.SearchModSeq, ModSeq: res[2].ModSeq}, []storage.UID{3, 4}},
		{"TEXT alpha", text(storage.SearchText, "ALPHA"), []storage.UID{1, 3}},
		{"BODY zebra", text(storage.SearchBody, "Zebra Crossing"), []storage.UID{2}},
		{"TEXT short pattern", text(storage.SearchText, "ze"), []storage.UID{2}},
		{"HEADER Subject gamma", storage.SearchKey{Op: storage.SearchHeader, Name: "subject", Value: "GAMMA"}, []storage.UID{3}},
		{"HEADER Subject present", storage.SearchKey{Op: storage.SearchHeader, Name: "Subject"}, []storage.UID{1, 2, 3, 4}},
		{"HEADER X-Missing present", storage.SearchKey{Op: storage.SearchHeader, Name: "X-Missing"}, nil},
		{"OR TEXT beta NOT UID 1:3", or(text(storage.SearchText, "beta"), not(storage.SearchKey{Op: storage.SearchUID, UIDs: storage.UIDSet{{Start: 1, Stop: 3}}})), []storage.UID{2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.s.Search(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, tt.key)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("Search(%s) = %v, %v; want %v", tt.name, got, err, tt.want)
			}
		})
	}
}

func larger(sizes []int64, n int64) []storage.UID {
	var u []storage.UID
	for i, s := range sizes {
		if s > n {
			u = append(u, storage.UID(i+1))
		}
	}
	return u
}

func smaller(sizes []int64, n int64) []storage.UID {
	var u []storage.UID
	for i, s := range sizes {
		if s < n {
			u = append(u, storage.UID(i+1))
		}
	}
	return u
}

// Criteria nested deeper than storage.MaxSearchDepth are refused.
func testSearchDepth(t *testing.T, h Harness) {
	e := newEnv(t, h.New(t))
	e.append(e.s, e.acct.ID, e.inbox.ID, storage.Flags{})
	nest := func(n int) storage.SearchKey {
		k := storage.SearchKey{Op: storage.SearchAll}
		for range n {
			k = storage.SearchKey{Op: storage.SearchNot, Children: []storage.SearchKey{k}}
		}
		return k
	}
	tests := []struct {
		depth int
		want  []storage.UID
		err   error
	}{
		{2, []storage.UID{1}, nil},
		{storage.MaxSearchDepth - 2, []storage.UID{1}, nil},
		{storage.MaxSearchDepth - 1, nil, nil},
		{storage.MaxSearchDepth + 1, nil, storage.ErrLimit},
		{10 * storage.MaxSearchDepth, nil, storage.ErrLimit},
	}
	for _, tt := range tests {
		got, err := e.s.Search(e.ctx, e.acct.ID, e.acct.ID, e.inbox.ID, nest(tt.depth))
		if !errors.Is(err, tt.err) || !slices.Equal(got, tt.want) {
			t.Errorf("Search(%d nested NOTs) = %v, %v; want %v, %v", tt.depth, got, err, tt.want, tt.err)
		}
	}
}
