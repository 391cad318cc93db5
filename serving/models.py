"""Models of the serving app."""
