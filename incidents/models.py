"""Incidents of AI systems and deployments (EU AI Act Art. 73)."""
