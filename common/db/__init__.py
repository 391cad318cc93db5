"""Database backends of the service."""
