package fleet

// Operators' own backups of the registry: registry.export pages through
// every entry, registry.import writes a part of a registry file back. The
// parts are registry.json's shape, so a backup and the registry.json of a
// control service before registries moved to JetStream read the same.

// Registry backup operations (admin only).
const (
	// OpRegistryExport answers a [RegistryExportPage] for a
	// [RegistryExportRequest].
	OpRegistryExport = "registry.export"
	// OpRegistryImport writes a [RegistryPart] and answers a
	// [RegistryImportResult].
	OpRegistryImport = "registry.import"
)

// RegistryPart is part of a registry file: entries of each kind keyed as
// registry.json keys them (machines and pending machines by id,
// operators and apps by name).
type RegistryPart struct {
	Machines  map[string]*Machine  `json:"machines,omitempty"`
	Pending   map[string]*Pending  `json:"pending,omitempty"`
	Operators map[string]*Operator `json:"operators,omitempty"`
	Apps      map[string]*App      `json:"apps,omitempty"`
	// Denied is the deny list by entry ("id:<id>", "key:<key>"; see
	// [Denied]).
	Denied map[string]*Denied `json:"denied,omitempty"`
}

// RegistryExportRequest asks for the entries after After (the Next of
// the previous page; "" from the start), at most Limit of them (0: the
// service's default; at most [MaxListLimit]).
type RegistryExportRequest struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// RegistryExportPage answers [OpRegistryExport]: a part of the registry
// that fits in one message, the entries in the whole registry (Total),
// and Next, the After of the following page ("" on the last).
type RegistryExportPage struct {
	RegistryPart
	Total int    `json:"total"`
	Next  string `json:"next,omitempty"`
}

// RegistryImportResult answers [OpRegistryImport]: per kind of entry
// ("machines", "pending", "operators", "apps", "denied"), how many were added, how
// many changed to the file's, and how many skipped (identical, or a
// pending entry for a machine known already); Closed is the live
// connections closed because their key, role or app was replaced.
type RegistryImportResult struct {
	Added   map[string]int `json:"added"`
	Changed map[string]int `json:"changed"`
	Skipped map[string]int `json:"skipped"`
	Closed  int            `json:"closed,omitempty"`
}
