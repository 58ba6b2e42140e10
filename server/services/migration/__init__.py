"""The legacy eID: its data formats, its store and login, the importer of its export, and the
guided migration from it."""
