package bench

import "testing"

// TestReview16ParseBatchNaN: strconv.ParseFloat takes "NaN", which
// passes both bounds checks (f <= 0 and f > 100 are false for NaN), so
// --batch NaN% is accepted and size() converts NaN to an int (undefined
// in Go: platform-dependent), ending as batches of one. Bad input must be
// refused with a clear error.
func TestReview16ParseBatchNaN(t *testing.T) {
	for _, s := range []string{"NaN%", "nan%"} {
		if b, err := ParseBatch(s); err == nil {
			t.Errorf("ParseBatch(%q) = %+v, nil; want an error", s, b)
		}
	}
}
