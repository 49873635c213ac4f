from checkout_fixtures import checkout, upstream  # noqa: F401  (fixtures for tests/test_checkout*.py, test_series*.py)
