package controlsvc

import (
	"fmt"
	"testing"
	"time"
)

// TestIPLimiterKeys: IPv6 addresses of one /64 share a bucket (rotating
// within it gains nothing), IPv4-mapped IPv6 is its IPv4, another /64 or
// IPv4 address has its own.
func TestIPLimiterKeys(t *testing.T) {
	now := calloutTime
	l := newIPLimiter(0, 2, 100, func() time.Time { return now })
	for _, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"} {
		if r := l.allow(ip); r != nil {
			t.Fatalf("%s: %v", ip, r)
		}
	}
	if r := l.allow("2001:db8:1:2::beef"); r == nil || r.ip != "2001:db8:1:2::/64" {
		t.Fatalf("a third address of the same /64: got %+v, want refused as 2001:db8:1:2::/64", r)
	}
	if r := l.allow("2001:db8:1:3::1"); r != nil {
		t.Fatalf("another /64: %v", r)
	}
	l.allow("192.0.2.1")
	l.allow("::ffff:192.0.2.1")
	if r := l.allow("192.0.2.1"); r == nil || r.ip != "192.0.2.1" {
		t.Fatalf("IPv4-mapped IPv6 has a bucket of its own: got %+v", r)
	}
	if r := l.allow("192.0.2.2"); r != nil {
		t.Fatalf("another IPv4 address: %v", r)
	}
	for ip, want := range map[string]string{"fe80::1%eth0": "fe80::/64", "not an ip": "not an ip", "10.1.2.3": "10.1.2.3"} {
		if got := limiterKey(ip); got != want {
			t.Errorf("limiterKey(%q) = %q, want %q", ip, got, want)
		}
	}
}

// TestIPLimiterChurnResetsNobody: when the map is full, a churn of fresh
// addresses neither resets a refused address's bucket nor grows the map:
// the newcomers share one overflow bucket. Once the remembered buckets
// are as good as new again, they are forgotten and newcomers get buckets
// of their own.
func TestIPLimiterChurnResetsNobody(t *testing.T) {
	now := calloutTime
	l := newIPLimiter(1, 2, 4, func() time.Time { return now })
	l.allow("198.51.100.1")
	l.allow("198.51.100.1")
	if r := l.allow("198.51.100.1"); r == nil {
		t.Fatal("third attempt within the burst of 2 admitted")
	}
	refusedFresh := 0
	for i := range 10000 {
		if i%1000 == 0 {
			now = now.Add(10 * time.Millisecond) // let sweeps run
		}
		if r := l.allow(fmt.Sprintf("2001:db8:%x::1", i)); r != nil {
			refusedFresh++
			if r.ip != overflowKey {
				t.Fatalf("fresh address %d refused as %q, want the overflow bucket", i, r.ip)
			}
		}
		if l.size() > 4 {
			t.Fatalf("limiter remembers %d addresses, more than its 4", l.size())
		}
	}
	if refusedFresh == 0 {
		t.Error("10,000 fresh addresses were all admitted: the overflow bucket does not bound them")
	}
	if r := l.allow("198.51.100.1"); r == nil {
		t.Fatal("the refused address was admitted again: the churn reset its bucket")
	}
	// Time passes: every bucket refills and no one is refused any more.
	now = now.Add(limitLogEvery + 5*time.Second)
	if r := l.allow("203.0.113.9"); r != nil {
		t.Fatalf("a newcomer once the map has good-as-new buckets: %v", r)
	}
	if r := l.allow("198.51.100.1"); r != nil {
		t.Fatalf("the refused address once refilled: %v", r)
	}
}
