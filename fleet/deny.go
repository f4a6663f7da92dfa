package fleet

import "time"

// The deny list: machine ids and keys an operator has refused for good
// (like salt-key -d). The auth callout refuses a denied id or key at once
// and records nothing as pending, so a removed host that keeps retrying
// does not come back to the pending list. Only admins change the list;
// strangers' attempts never add to it.

// Deny list operations (admin only, but for the list).
const (
	// OpMachinesReject drops a pending machine ([MachineRequest] with its
	// ID) and answers a [RemoveResult]; it never touches a registered one.
	OpMachinesReject = "machines.reject"
	// OpMachinesDeny adds a [DenyRequest] to the deny list and answers a
	// [DenyResult].
	OpMachinesDeny = "machines.deny"
	// OpMachinesUndeny removes a [DenyRequest] from the deny list and
	// answers the [Denied] entry removed.
	OpMachinesUndeny = "machines.undeny"
	// OpMachinesDenied lists the deny list: a [ListRequest] (its After a
	// [Denied.Entry]) answered by a [DeniedList].
	OpMachinesDenied = "machines.denied"
)

// MaxDenied bounds the deny list.
const MaxDenied = 10000

// Denied is one entry of the deny list: a machine id or a public key,
// never both.
type Denied struct {
	// ID is a denied machine id: no key may connect as it.
	ID string `json:"id,omitempty"`
	// Key is a denied public nkey: it may connect as no machine.
	Key     string    `json:"key,omitempty"`
	AddedAt time.Time `json:"added_at"`
	AddedBy string    `json:"added_by,omitempty"`
}

// Entry names d in the list: "id:<id>" or "key:<key>".
func (d Denied) Entry() string { return DenyEntry(d.ID, d.Key) }

// DenyEntry names the deny list entry of id or key: "id:<id>" or
// "key:<key>" ("" when both or neither are set).
func DenyEntry(id, key string) string {
	switch {
	case id != "" && key == "":
		return "id:" + id
	case key != "" && id == "":
		return "key:" + key
	}
	return ""
}

// DenyRequest is the body of [OpMachinesDeny] and [OpMachinesUndeny]: a
// machine id or a public key (U…), exactly one of them.
type DenyRequest struct {
	ID  string `json:"id,omitempty"`
	Key string `json:"key,omitempty"`
}

// DenyResult answers [OpMachinesDeny]: the entry, and the pending
// machines it dropped (tried only by a denied key, or the denied id).
type DenyResult struct {
	Denied
	DroppedPending []string `json:"dropped_pending,omitempty"`
}

// DeniedList answers [OpMachinesDenied] (one page), sorted by entry.
type DeniedList struct {
	Denied []Denied `json:"denied"`
	ListPage
}
