package fleet

import (
	"strings"
	"testing"
)

func TestMachineTokenRoundTrip(t *testing.T) {
	tests := []struct {
		id, token string
	}{
		{"10.0.0.5_web01", "10~0~0~5_web01"},
		{"web01", "web01"},
		{"a.b.c", "a~b~c"},
		{"fe80::1_host-a", "fe80::1_host-a"},
		{"...", "~~~"},
		{"x", "x"},
		{strings.Repeat("a.", MaxIDLen/2), strings.Repeat("a~", MaxIDLen/2)},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if got := MachineToken(tt.id); got != tt.token {
				t.Fatalf("MachineToken(%q): got %q, want %q", tt.id, got, tt.token)
			}
			if strings.Contains(MachineToken(tt.id), ".") {
				t.Fatalf("MachineToken(%q) contains a dot", tt.id)
			}
			got, err := MachineFromToken(tt.token)
			if err != nil {
				t.Fatalf("MachineFromToken(%q): %v", tt.token, err)
			}
			if got != tt.id {
				t.Fatalf("MachineFromToken(%q): got %q, want %q", tt.token, got, tt.id)
			}
		})
	}
}

func TestMachineFromTokenRefuses(t *testing.T) {
	tests := []struct {
		name, token string
	}{
		{"empty", ""},
		{"star wildcard", "*"},
		{"gt wildcard", ">"},
		{"space", "web 01"},
		{"slash", "a/b"},
		{"too long", strings.Repeat("a", MaxIDLen+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MachineFromToken(tt.token)
			if err == nil {
				t.Fatalf("MachineFromToken(%q): got %q, want an error", tt.token, got)
			}
			if got != "" {
				t.Fatalf("MachineFromToken(%q) returned %q with an error", tt.token, got)
			}
			if !strings.Contains(err.Error(), "bad machine token") {
				t.Fatalf("error %q does not say %q", err, "bad machine token")
			}
		})
	}
}

// FuzzMachineToken asserts that every valid machine id survives the round
// trip through its subject token, and that the token is one subject token.
func FuzzMachineToken(f *testing.F) {
	for _, s := range []string{"10.0.0.5_web01", "web01", "a", "fe80::1_h", "...", "-_:.", "10~0", "a b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok := MachineToken(id)
		if ValidateMachineID(id) != nil {
			// Invalid ids may still decode to something; it must be valid.
			if got, err := MachineFromToken(tok); err == nil {
				if verr := ValidateMachineID(got); verr != nil {
					t.Fatalf("MachineFromToken(%q) = %q, which is not a valid id: %v", tok, got, verr)
				}
			}
			return
		}
		if strings.ContainsAny(tok, ". *>\t\r\n") {
			t.Fatalf("MachineToken(%q) = %q is not a single subject token", id, tok)
		}
		got, err := MachineFromToken(tok)
		if err != nil {
			t.Fatalf("MachineFromToken(MachineToken(%q)): %v", id, err)
		}
		if got != id {
			t.Fatalf("round trip: got %q, want %q", got, id)
		}
	})
}

func TestValidateMachineID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"10.0.0.5_web01", true},
		{"web01", true},
		{"fe80::1_web-01", true},
		{"A.Z_a-z:0.9", true},
		{strings.Repeat("x", MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", MaxIDLen+1), false},
		{"web 01", false},
		{"web~01", false},
		{"web*", false},
		{"web>", false},
		{"web/01", false},
		{"wéb01", false},
		{"web\n01", false},
		{"web$01", false},
	}
	for _, tt := range tests {
		err := ValidateMachineID(tt.id)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidateMachineID(%q): got ok=%v (err %v), want ok=%v", tt.id, got, err, tt.ok)
		}
	}
}

func TestValidateMachineIDMessages(t *testing.T) {
	tests := []struct {
		id, want string
	}{
		{"", "machine id is empty"},
		{strings.Repeat("x", MaxIDLen+1), "at most 128"},
		{"web 01", `has ' ' at position 3`},
	}
	for _, tt := range tests {
		err := ValidateMachineID(tt.id)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ValidateMachineID(%.20q): got %v, want an error containing %q", tt.id, err, tt.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"machine-info", true},
		{"current_load", true},
		{"A9", true},
		{strings.Repeat("n", MaxIDLen), true},
		{"", false},
		{strings.Repeat("n", MaxIDLen+1), false},
		{"a.b", false},
		{"a:b", false},
		{"a b", false},
		{"*", false},
		{">", false},
		{"ünicode", false},
	}
	for _, tt := range tests {
		err := ValidateName("operator name", tt.name)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidateName(%q): got ok=%v (err %v), want ok=%v", tt.name, got, err, tt.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "operator name") {
			t.Errorf("ValidateName(%q) error %q does not start with what", tt.name, err)
		}
	}
}
