package fleet

import (
	"fmt"
	"strings"
)

// MaxIDLen bounds machine ids, operator names and function names.
const MaxIDLen = 128

// ValidateMachineID reports whether id may be used as a machine id:
// 1–128 characters from A–Z a–z 0–9 and "._:-". The usual form is
// <primary IP>_<hostname>, e.g. 10.0.0.5_web01.
func ValidateMachineID(id string) error {
	if id == "" {
		return fmt.Errorf("machine id is empty")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("machine id %.20q… is %d characters long; at most %d are allowed", id, len(id), MaxIDLen)
	}
	for i, r := range id {
		if !isAlnum(r) && !strings.ContainsRune("._:-", r) {
			return fmt.Errorf("machine id %q has %q at position %d; only letters, digits and . _ : - are allowed", id, r, i)
		}
	}
	return nil
}

// MachineToken encodes a machine id as one subject token: every "." becomes
// "~" (which a machine id never contains). 10.0.0.5_web01 → 10~0~0~5_web01.
func MachineToken(id string) string { return strings.ReplaceAll(id, ".", "~") }

// MachineFromToken reverses [MachineToken] and validates the result.
func MachineFromToken(tok string) (string, error) {
	id := strings.ReplaceAll(tok, "~", ".")
	if err := ValidateMachineID(id); err != nil {
		return "", fmt.Errorf("bad machine token %q: %w", tok, err)
	}
	return id, nil
}

// ValidateName checks an operator name or a function name: 1–128 characters
// from A–Z a–z 0–9 and "_-". what names the thing in the error ("operator name").
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(name) > MaxIDLen {
		return fmt.Errorf("%s %.20q… is too long (%d > %d characters)", what, name, len(name), MaxIDLen)
	}
	for i, r := range name {
		if !isAlnum(r) && r != '-' && r != '_' {
			return fmt.Errorf("%s %q has %q at position %d; only letters, digits, - and _ are allowed", what, name, r, i)
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
}
