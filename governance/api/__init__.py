"""The governance REST API: identity, projects, and (later) approvals."""
