package audit

import (
	"context"
	"testing"
)

// BenchmarkAppend measures one fsynced record (the cost of every audited action).
func BenchmarkAppend(b *testing.B) {
	l, err := Open(Path(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := Record{Peer: "phone", Role: "operator", Action: ActionTerminal, Args: map[string]string{"line": "G28"}, Result: "ok"}
	for b.Loop() {
		if err := l.Append(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
