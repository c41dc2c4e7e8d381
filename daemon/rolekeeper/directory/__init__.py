"""The people/roles/clients directory: CSV import and read-only queries."""
