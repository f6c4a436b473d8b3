"""Data sources: the databases report SQL runs against, and the sandbox it runs in.

Not a Django app (no models): ``registry`` reads the configured sources from the
environment, ``backends`` holds one module per database vendor behind one interface,
``safety`` refuses sources that would let report SQL out of its sandbox,
``parameters`` the types of report parameters, ``placeholders`` finds ``{{ name }}`` in
report SQL, ``sandbox`` what every backend shares. This package imports none of the
apps (``reports``, ``runs``, ``access``); they import it.
"""
