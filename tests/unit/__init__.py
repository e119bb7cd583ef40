"""Fast tests: the app in-process on SQLite (or TEST_DATABASE_URL), fakes for the rails."""
