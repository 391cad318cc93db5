"""The registry's REST API: datasets, versions (upload, scans, review) and data-subject lookups."""
