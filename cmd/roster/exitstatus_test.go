package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/seed-3c836eab/roster/pkg/wire"
)

// TestExitStatusTableIsREADMEs checks README.md's exit status table against
// wireExitCode: every registered code is in the table, with the status the commands
// exit with.
func TestExitStatusTableIsREADMEs(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "Exit status:\n")
	if !ok {
		t.Fatal(`README.md has no "Exit status:" table`)
	}
	table, _, _ = strings.Cut(table, "\n\n")
	row := regexp.MustCompile(`^\| (\d+) \| (.*) \|$`)
	code := regexp.MustCompile("`([a-z_]+)`")
	documented := map[wire.Code]int{}
	for line := range strings.Lines(table) {
		m := row.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[1])
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			documented[wire.Code(c[1])] = status
		}
	}
	for _, info := range wire.Codes() {
		want, ok := documented[info.Code]
		if !ok {
			t.Errorf("%s: not in README.md's exit status table", info.Code)
			continue
		}
		if got, _ := wireExitCode(&wire.Error{Code: info.Code}); got != want {
			t.Errorf("%s: exits with %d, README.md says %d", info.Code, got, want)
		}
	}
}
