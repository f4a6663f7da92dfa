package fleet

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorFromHeader(t *testing.T) {
	tests := []struct {
		name, code, desc string
		want             *Error
	}{
		{"both empty", "", "", nil},
		{"not found", "404", "no such machine", &Error{Code: 404, Description: "no such machine"}},
		{"code only", "503", "", &Error{Code: 503}},
		{"description only", "", "boom", &Error{Code: CodeInternal, Description: "boom"}},
		{"non-numeric code", "abc", "boom", &Error{Code: CodeInternal, Description: "boom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ErrorFromHeader(tt.code, tt.desc)
			if tt.want == nil {
				if got != nil {
					t.Fatalf("got %+v, want nil", got)
				}
				return
			}
			if got == nil || *got != *tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"fleet error", Errorf(CodeNotFound, "x"), CodeNotFound},
		{"wrapped", fmt.Errorf("call: %w", Errorf(CodeTimeout, "slow")), CodeTimeout},
		{"plain", errors.New("boom"), CodeInternal},
		{"nil", nil, CodeInternal},
	}
	for _, tt := range tests {
		if got := CodeOf(tt.err); got != tt.want {
			t.Errorf("%s: CodeOf: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestErrorString(t *testing.T) {
	e := Errorf(CodeForbidden, "operator %s has role %s", "bob", RoleViewer)
	if got, want := e.Error(), "403 operator bob has role viewer"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestValidRole(t *testing.T) {
	for _, tt := range []struct {
		role string
		ok   bool
	}{{RoleAdmin, true}, {RoleViewer, true}, {"", false}, {"Admin", false}, {"root", false}} {
		if got := ValidRole(tt.role); got != tt.ok {
			t.Errorf("ValidRole(%q): got %v, want %v", tt.role, got, tt.ok)
		}
	}
}
