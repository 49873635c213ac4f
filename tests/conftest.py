# Fixtures for tests/test_checkout*.py and tests/test_series*.py.
from checkout_fixtures import base_checkout, checkout, upstream  # noqa: F401
