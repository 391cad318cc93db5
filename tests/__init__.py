"""Cross-app scenarios. Unit tests live in each app's tests/ folder."""
