"""Root of the test suite. Its presence puts tests/ on the import path of every test module,
tests/io/ included, so the plain helper modules here (``_sansio``, ``_net``) import from
anywhere below."""

import pytest

from dquic import _protection


@pytest.fixture(params=_protection.AVAILABLE_BACKENDS)
def backend(request):
    """Run the test once per packet-protection backend this build has, as the default backend
    for new keys (``_protection.use_backend``); the previous default comes back after it."""
    previous = _protection.use_backend(request.param)
    try:
        yield request.param
    finally:
        _protection.use_backend(previous)
