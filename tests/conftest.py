"""Root of the test suite. Its presence puts tests/ on the import path of every test module,
tests/io/ included, so the plain helper modules here (``_sansio``, ``_net``) import from
anywhere below."""
