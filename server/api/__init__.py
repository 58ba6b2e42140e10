"""HTTP routes and schemas; domain errors become problem+json in one place."""
