"""The test suite is a package: helpers are imported as ``tests._support.*``, never by bare name.

pytest's default ``prepend`` import mode puts the first directory above the outermost ``__init__.py``
(the repository root) on ``sys.path``, so test modules are ``tests.core.test_cli`` and so on, and
the ``tests/docker`` directory can never shadow the ``docker`` SDK.
"""
