package fleet

import (
	"errors"
	"fmt"
	"strconv"
)

// Header names. The error headers are the ones nats.go micro uses, so
// `nats req` shows a function's error as it is.
const (
	HeaderError     = "Nats-Service-Error"
	HeaderErrorCode = "Nats-Service-Error-Code"
	// HeaderMachine names the machine that sent a function reply.
	HeaderMachine = "Cc-Machine"
	// HeaderRetryAfter, on a 429 from the control service, is how many
	// milliseconds until the request would be let through.
	HeaderRetryAfter = "Cc-Retry-After-Ms"
)

// Error codes, HTTP-like, carried in [HeaderErrorCode].
const (
	CodeBadRequest = 400 // malformed request, unknown or mistyped argument
	CodeForbidden  = 403 // the caller's role does not allow this
	CodeNotFound   = 404 // unknown function, machine or operator
	CodeConflict   = 409 // already exists
	CodeTooLarge   = 413 // request or output over the size limit
	// CodeTooManyRequests: the caller is over its rate limit; retry later.
	CodeTooManyRequests = 429
	CodeInternal        = 500 // the function failed or panicked
	CodeUnavailable     = 503 // a source the function needs is absent
	CodeTimeout         = 504 // the function did not finish in time
)

// Error is an error with a code, as sent to a caller.
type Error struct {
	Code        int    `json:"code"`
	Description string `json:"description"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Description) }

// Errorf builds an [Error].
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err if it is (or wraps) an [*Error], else
// [CodeInternal].
func CodeOf(err error) int {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	return CodeInternal
}

// ErrorFromHeader builds an [*Error] from the values of the two error
// headers, or returns nil when code is empty.
func ErrorFromHeader(code, description string) *Error {
	if code == "" && description == "" {
		return nil
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		n = CodeInternal
	}
	return &Error{Code: n, Description: description}
}
