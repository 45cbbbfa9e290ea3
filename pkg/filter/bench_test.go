package filter

import (
	"strconv"
	"testing"
)

const benchExpr = `Department is "Accounts" and $Country ne "US"`

// benchSession returns a session of 12 properties that benchExpr matches.
func benchSession(i int) map[string]string {
	props := map[string]string{
		"Department": "Accounts", "$Country": "FR", "$SessionId": "s" + strconv.Itoa(i),
		"$Principal": "alice", "$Roles": `"admin","client"`, "$Language": "en",
		"$Transport": "wss", "$Version": "7", "Status": "Open", "Desk": "7",
		"Region": "EMEA", "Tier": "gold",
	}
	if i%2 == 1 {
		props["$Country"] = "US"
	}
	return props
}

func BenchmarkCompile(b *testing.B) {
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			if _, err := Compile(benchExpr + ` and n is "` + strconv.Itoa(i) + `"`); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Compile(benchExpr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMatches(b *testing.B) {
	f, err := Compile(benchExpr)
	if err != nil {
		b.Fatal(err)
	}
	props := benchSession(0)
	b.ReportAllocs()
	for b.Loop() {
		if !f.Matches(props) {
			b.Fatal("got false, want true")
		}
	}
}

// BenchmarkMatchesSplit is BenchmarkMatches over a session's fixed and user
// properties kept apart, as the registry matches its records.
func BenchmarkMatchesSplit(b *testing.B) {
	f, err := Compile(benchExpr)
	if err != nil {
		b.Fatal(err)
	}
	fixed, user := split(benchSession(0))
	b.ReportAllocs()
	for b.Loop() {
		if !f.MatchesSplit(fixed, user) {
			b.Fatal("got false, want true")
		}
	}
}

func BenchmarkMatchesRoles(b *testing.B) {
	f, err := Compile(`hasRoles ["client"] and $Country in 'FR' 'DE'`)
	if err != nil {
		b.Fatal(err)
	}
	props := benchSession(0)
	b.ReportAllocs()
	for b.Loop() {
		if !f.Matches(props) {
			b.Fatal("got false, want true")
		}
	}
}

func BenchmarkMatches100k(b *testing.B) {
	f, err := Compile(benchExpr)
	if err != nil {
		b.Fatal(err)
	}
	sessions := make([]map[string]string, 100_000)
	for i := range sessions {
		sessions[i] = benchSession(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for _, props := range sessions {
			if f.Matches(props) {
				n++
			}
		}
		if n != len(sessions)/2 {
			b.Fatalf("matched %d, want %d", n, len(sessions)/2)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(sessions)), "ns/session")
}
