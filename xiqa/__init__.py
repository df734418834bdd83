"""xiqa."""
